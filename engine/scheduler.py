"""When the engine works: wake-ups, the scheduler's polls, the queue of instances to advance
(batched), retries of instances found locked, and lease renewal.

Wake-ups come from three places: NOTIFY on channel df_wake (df.start, df.cancel,
df.signal: every call site, every pgdurable process; the payload says nothing, since any role
may listen or notify), `wake()` (work for the scheduler), and a slow poll that also catches
due timers and expired leases. Each runs a scheduler pass, which reads what is due from the
catalog. When the proxy sees a df.start commit it only wakes the scheduler if the
listener is down (Engine.started_through_proxy()).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg

from engine.records import AdvanceDue, Claimed, NewInstance, NextTimer
from engine.running import Background, Running
from engine.settings import EngineSettings
from engine.store import Store

if TYPE_CHECKING:
    from engine.advance import Advancer
    from engine.cancel import Canceller
    from engine.connections.slots import StepSlots
    from engine.dispatch import TaskRunner

log = logging.getLogger("pgdurable.engine")
CLAIM_BATCH = 64
ADVANCE_BATCH = 64  # instances loaded, planned and applied in one transaction
LOCKED_RETRY_DELAY = 0.005  # seconds before advancing again an instance found locked,
LOCKED_RETRIES = 8  # doubled at each retry (about 1.3 s in all); then the poll finds it


class AdvanceQueue:
    """The instances to advance, in arrival order, and the wake-up of the scheduler."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.woken = asyncio.Event()
        self.ready = asyncio.Event()
        self.waiting: dict[str, None] = {}  # instance ids, in arrival order
        self._locked_retries: dict[str, int] = {}  # instance id -> advances retried
        # the last poll claimed all the tasks it asked for: more may be claimable (orphans
        # after a crash), so a step slot that frees up wakes the scheduler
        self.claims_left = False

    def wake(self) -> None:
        """Look for work now."""
        self.woken.set()

    def request(self, instance_id: str) -> None:
        """Advance the instance soon (the advancer takes it with others)."""
        self.waiting[instance_id] = None
        self.ready.set()

    def take(self) -> list[str]:
        """The next batch of instances to advance (taken out of the queue)."""
        batch = list(itertools.islice(self.waiting, ADVANCE_BATCH))
        for instance_id in batch:
            del self.waiting[instance_id]
        return batch

    def slot_freed(self) -> None:
        """A step slot was given back: claim the next orphan now, not at the next poll."""
        if self.claims_left:
            self.wake()

    def settled(self, instance_id: str) -> None:
        """A plan of the instance committed: its locked retries are over."""
        self._locked_retries.pop(instance_id, None)

    async def retry_locked(self, instance_ids: list[str]) -> None:
        """Instances not loaded although an advance is due are being changed by another
        transaction right now (a step recording its result, a parallel step's advance):
        try again in a moment rather than at the next poll, backing off (a transaction left
        open after df.cancel holds its instance row until it ends)."""
        due = await self.store.advances_due(instance_ids)
        for instance_id in set(instance_ids) - set(due):  # advanced already: nothing to retry
            self._locked_retries.pop(instance_id, None)
        for instance_id in due:
            tries = self._locked_retries.get(instance_id, 0)
            if tries < LOCKED_RETRIES:
                self._locked_retries[instance_id] = tries + 1
                loop = asyncio.get_running_loop()
                loop.call_later(LOCKED_RETRY_DELAY * 2**tries, self.request, instance_id)
            else:
                self._locked_retries.pop(instance_id, None)  # the poll takes over


class Scheduler:
    """The engine's three loops: scheduler passes, the advancer, lease renewal."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        queue: AdvanceQueue,
        parts: SchedulerParts,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.parts = parts
        self.stop = asyncio.Event()

    async def schedule(self) -> None:
        """Run a scheduler pass whenever woken, and at least every poll interval (sooner
        when a timer is due)."""
        pause = 0.0
        parts = self.parts
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.woken.wait(), pause)
            if self.stop.is_set():
                return
            self.queue.woken.clear()
            try:
                await parts.ensure_listener()
                due = await self.poll()
                interval = self.settings.poll_interval
                pause = interval if due is None else max(0.0, min(interval, due))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                parts.background.warn(exc, "scheduler", "event=scheduler_error error=%r")
                await asyncio.sleep(min(1.0, self.settings.poll_interval))
                continue
            parts.background.outage.answered()

    async def poll(self) -> float | None:
        """One scheduler pass: start the tasks claimed, advance the instances due; returns
        the seconds until the next timer (None: nothing scheduled)."""
        parts, queue = self.parts, self.queue
        free = parts.slots.free
        claims = max(0, min(free, CLAIM_BATCH))  # what we can run now
        # a new instance's state only where its first step can be taken (_new_instance)
        documents = 0 if queue.waiting else free
        rows = await self.store.poll(claims, list(parts.advancer.first_steps), documents)
        due = None
        claimed = first_steps = 0
        for row in rows:
            if isinstance(row, NewInstance):
                first_steps += self._new_instance(row, first_steps)
            elif isinstance(row, AdvanceDue):
                queue.request(row.instance_id)
            elif isinstance(row, Claimed):
                claimed += 1
                parts.tasks.start_claimed(row)
            elif isinstance(row, NextTimer):
                due = row.due
        if claims > 0:  # (with no free slot we learnt nothing about what is claimable)
            queue.claims_left = claimed == claims
        elif due is not None and due <= 0:
            # due tasks wait for a step slot: the slot that frees up wakes the scheduler
            # (polling again at once would only spin), the poll interval stays the net
            queue.claims_left = True
            return None
        return due

    def _new_instance(self, row: NewInstance, first_steps: int) -> bool:
        """A new instance whose steps run in the catalog's database: when a step connection
        is free and no advance waits, its first advance and first step share one
        transaction on its owner's connection, planned from the state the poll read (the
        owner as df._instance_owner read it). False when it is advanced as usual (a gone
        owner too: the advance fails the instance)."""
        owner, state = row.owner, row.state
        if owner is None or owner.gone or state is None or self.queue.waiting:
            self.queue.request(row.instance_id)
            return False
        if self.parts.slots.free <= first_steps:
            self.queue.request(row.instance_id)
            return False
        self.parts.advancer.first_step(row.instance_id, owner, state)
        return True

    async def advance(self) -> None:
        """Advance the instances asked for, as many per transaction as have arrived."""
        queue, parts = self.queue, self.parts
        while not self.stop.is_set():
            await queue.ready.wait()
            queue.ready.clear()
            while queue.waiting:
                batch = queue.take()
                try:
                    await parts.advancer.advance_many(batch)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    message = f"event=advance_error instances={len(batch)} error=%r"
                    parts.background.warn(exc, "advance", message)
                    queue.wake()  # their _advance rows stay: the scheduler finds them again
                except Exception:  # a planner bug must not stop every other advance
                    log.exception("event=advance_failed instances=%s", batch)

    async def keep_leases(self) -> None:
        """Renew the leases of the running steps; cancel those whose lease was lost."""
        interval = self.settings.lease_seconds / 3
        parts = self.parts
        while not self.stop.is_set():
            await asyncio.sleep(interval)
            tokens = [uuid.UUID(r.task.token) for r in parts.running.all() if r.leased]
            try:
                if tokens:
                    kept = await self.store.renew_leases(tokens)
                    await parts.canceller.cancel_lost({str(t) for t in tokens} - kept)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                parts.background.warn(exc, "leases", "event=lease_renewal_failed error=%r")


class SchedulerParts:
    """The parts of the engine the scheduler drives (engine.py puts them together)."""

    def __init__(
        self,
        slots: StepSlots,
        advancer: Advancer,
        tasks: TaskRunner,
        canceller: Canceller,
        running: Running,
        background: Background,
        ensure_listener: Callable[[], Awaitable[None]],
    ) -> None:
        self.slots = slots
        self.advancer = advancer
        self.tasks = tasks
        self.canceller = canceller
        self.running = running
        self.background = background
        self.ensure_listener = ensure_listener
