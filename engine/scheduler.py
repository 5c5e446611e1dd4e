"""When the engine works: wake-ups, the scheduler's polls, the queue of instances to advance
(batched, several batches in flight), retries of instances found locked, and lease renewal.

Wake-ups come from four places: the relay, once a session it serves has ended a
transaction that gave the engine work (a df.start, df.cancel, df.signal... raised
pgdurable's wake notice, df._wake_engines); NOTIFY on channel df_wake from any other
session, this engine's share of them (engine/presence.py, WakeShare; the payload says
nothing, since any role may listen or notify); `wake()` (work for the scheduler); and a
slow poll that also catches due timers, expired leases and claims. Each runs a scheduler
pass, which reads what is due from the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg

from engine.announced import Announced
from engine.records import AdvanceDue, Claimed, NewInstance, NextTimer
from engine.running import Background, Running
from engine.settings import EngineSettings
from engine.store import Store

if TYPE_CHECKING:
    from engine.advance import Advancer
    from engine.cancel import Canceller
    from engine.connections.slots import StepSlots
    from engine.dispatch import TaskRunner
    from engine.metrics import EngineCounters

log = logging.getLogger("pgdurable.engine")
CLAIM_BATCH = 64
ADVANCE_BATCH = 64  # instances loaded, planned and applied in one transaction
ADVANCES_IN_FLIGHT = 4  # such transactions at once (the engine's pool has 15 connections)
LOCKED_RETRY_DELAY = 0.005  # seconds before advancing again an instance found locked,
LOCKED_RETRIES = 8  # doubled at each retry (about 1.3 s in all); then the poll finds it


class AdvanceQueue:
    """The instances to advance, in arrival order, and the wake-up of the scheduler."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.woken = asyncio.Event()
        self.ready = asyncio.Event()
        self.waiting: dict[str, None] = {}  # instance ids, in arrival order
        self._in_flight: set[str] = set()  # instances a batch in flight advances
        self.advancing = 0  # batches in flight
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
        """The next batch of instances to advance (taken out of the queue), leaving those
        a batch in flight advances now for after it."""
        batch = []
        for instance_id in self.waiting:
            if instance_id not in self._in_flight:
                batch.append(instance_id)
                if len(batch) == ADVANCE_BATCH:
                    break
        for instance_id in batch:
            del self.waiting[instance_id]
            self._in_flight.add(instance_id)
        if batch:
            self.advancing += 1
        return batch

    def advanced(self, batch: list[str]) -> None:
        """A batch taken is done (applied, or failed): the advancer may take more."""
        self._in_flight.difference_update(batch)
        self.advancing -= 1
        if self.waiting:
            self.ready.set()

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
        # a new instance's state for its first step (_new_instance), for up to twice as many
        # first steps under way as there are step slots: most slots held now are free again
        # when the answer comes (the poll is a round trip, and a remote PostgreSQL's takes
        # about as long as a step), and the other first steps wait for one in turn
        first_steps = parts.advancer.first_steps
        documents = max(0, 2 * parts.slots.size - len(first_steps))
        rows = await self.store.poll(claims, list(first_steps), documents)
        parts.counters.scheduler_passes_total += 1
        due = None
        claimed = 0
        for row in rows:
            if isinstance(row, NewInstance):
                self._new_instance(row)
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
            # due work waits for a step slot: the slot that frees up wakes the scheduler
            # (polling again at once would only spin), the poll interval stays the net
            queue.claims_left = True
            return None
        return due

    def _new_instance(self, row: NewInstance) -> None:
        """A new instance whose steps run in the catalog's database: its first advance and
        first step share one transaction on its owner's connection, planned from the state
        the poll read (the owner as df._instance_owner read it), once a step slot is free
        (a first step that waited checks that state again before its statement runs).
        Advanced as usual when the poll had no state for it (more new instances than step
        slots), or its owner is gone (the advance fails the instance)."""
        owner, state = row.owner, row.state
        if row.instance_id in self.parts.advancer.first_steps:
            return  # announced by its df.start, and taken already
        if owner is None or owner.gone or state is None:
            self.queue.request(row.instance_id)
            return
        self.parts.advancer.first_step(row.instance_id, owner, state)

    def announced(self, new: Announced) -> None:
        """A new instance its df.start claimed for this engine and announced, with its
        state (engine/announced.py): its first step, at once, unless as many first steps
        are under way as a pass would hand out (a pass takes it then: it is ours). Its
        state is checked again before its statement runs: the df.start's transaction may
        have changed the instance after announcing it, or rolled back."""
        advancer = self.parts.advancer
        if new.instance_id in advancer.first_steps:
            return
        if len(advancer.first_steps) >= 2 * self.parts.slots.size:
            self.queue.wake()
            return
        self.parts.counters.first_steps_announced_total += 1
        advancer.first_step(new.instance_id, new.owner, new.state, recheck=True)

    async def advance(self) -> None:
        """Advance the instances asked for, as many per transaction as have arrived, in up
        to ADVANCES_IN_FLIGHT transactions at once (each a few round trips to PostgreSQL)."""
        queue = self.queue
        while not self.stop.is_set():
            await queue.ready.wait()
            queue.ready.clear()
            while queue.advancing < ADVANCES_IN_FLIGHT:
                batch = queue.take()
                if not batch:
                    break
                self.parts.background.spawn(self._advance_batch(batch))

    async def _advance_batch(self, batch: list[str]) -> None:
        parts = self.parts
        try:
            await parts.advancer.advance_many(batch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            message = f"event=advance_error instances={len(batch)} error=%r"
            parts.background.warn(exc, "advance", message)
            self.queue.wake()  # their _advance rows stay: the scheduler finds them again
        except Exception:  # a planner bug must not stop every other advance
            log.exception("event=advance_failed instances=%s", batch)
        finally:
            self.queue.advanced(batch)

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
        counters: EngineCounters,
    ) -> None:
        self.counters = counters
        self.slots = slots
        self.advancer = advancer
        self.tasks = tasks
        self.canceller = canceller
        self.running = running
        self.background = background
        self.ensure_listener = ensure_listener
