"""How an instance advances: load (or hold) its state, plan (engine/planner/), apply the plan
and act on it. One interface, the Advancer, with three paths:

* the ordinary advance (`advance_many`, `advance`): instances asked for are loaded, planned
  and applied, many per transaction, on the engine's own connections;
* inside a step's transaction (`in_step` gives the executor an InStep): the SQL step's
  record and its instance's advance commit together, planned from the state held in memory
  when the database confirms it exact (df._complete_held), else from a fresh load;
* the first step (`first_step`): a new instance's first advance and its first SQL step in
  one transaction on its owner's connection (FirstTransaction).

InStep and FirstTransaction, the planning the executors call inside those transactions,
are in engine/in_step.py.

Whichever path applied a plan, `act_on` then cancels the steps it abandoned, starts the
tasks it leased to this engine and holds the instance's state while its SQL steps run here.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable

import asyncpg

from engine.cancel import Canceller
from engine.connections.outage import connection_lost
from engine.connections.slots import StepSlots
from engine.connections.step_connection import StepConnection
from engine.dispatch import TaskRunner
from engine.errors import SlotWaitTimedOut, StepFailed
from engine.executors.first_step import FirstOutcome, FirstResult, run_first_step
from engine.in_step import FirstTransaction, InStep, next_sql_step, owner_of
from engine.lifecycle_log import log_applied, log_started
from engine.metrics import EngineMetrics, StepEnd
from engine.planner.held import Planned, Planning, differences
from engine.planner.kinds import COMPLETED, FAILED, NodeType
from engine.records import Owner, Task
from engine.running import Background, Running
from engine.scheduler import AdvanceQueue
from engine.store import Store

log = logging.getLogger("pgdurable.engine")


class Advancer:
    """Advances instances (the three paths above) and acts on the plans applied."""

    def __init__(
        self,
        store: Store,
        planning: Planning,
        parts: AdvanceParts,
        verify_held: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        """`verify_held`, when given, checks the held state against the stored one after
        each advance in a step's transaction: it is called with the differences found."""
        self.store = store
        self.planning = planning
        self.owner_id = planning.lease.owner
        self.parts = parts
        self.verify_held = verify_held
        self.first_steps: set[str] = set()  # instances whose first step is being taken

    # -- the ordinary advance -----------------------------------------------------------------
    async def advance_many(self, instance_ids: list[str]) -> None:
        """advance() for several instances in one transaction; one by one if that fails."""
        if len(instance_ids) == 1:
            await self.advance(instance_ids[0])
            return
        planned: list[tuple[str, Planned]] = []
        skipped: list[str] = []  # not loaded: already advanced, or locked by another
        try:
            async with self.store.transaction() as tx:
                for instance_id, state in await tx.load_many(instance_ids):
                    if state is None:
                        skipped.append(instance_id)
                        continue
                    try:
                        planned.append((instance_id, self.planning.from_document(state)))
                    except Exception:  # a planner bug: this one stays due, the others go on
                        log.exception("event=plan_failed instance=%s", instance_id)
                if planned:
                    await tx.apply_many(
                        [p[0] for p in planned], [p[1].plan.to_json() for p in planned]
                    )
        except asyncpg.PostgresError as exc:
            if connection_lost(exc):
                raise  # their _advance rows stay
            log.warning("event=advance_batch_failed instances=%d error=%r", len(instance_ids), exc)
            for instance_id in instance_ids:
                await self.advance(instance_id)
            return
        if skipped:
            await self.parts.queue.retry_locked(skipped)
        self.parts.counters.advances_total += len(planned)
        for instance_id, one in planned:
            await self.act_on(instance_id, one)

    async def advance(self, instance_id: str) -> None:
        """Load, plan and apply one instance's next steps in one transaction."""
        async with self.store.transaction() as tx:
            text = await tx.load(instance_id)
            if text is not None:
                planned = self.planning.from_document(text)
                await tx.apply(instance_id, planned.plan.to_json())
        if text is None:
            await self.parts.queue.retry_locked([instance_id])
            return
        self.parts.counters.advances_total += 1
        await self.act_on(instance_id, planned)

    # -- after a plan committed ---------------------------------------------------------------
    async def act_on(
        self, instance_id: str, planned: Planned, carried: StepConnection | None = None
    ) -> None:
        """After a plan committed: cancel abandoned steps, start the tasks leased to us (the
        plan's one SQL step on `carried`, whose transaction began with the last step's
        COMMIT), and hold the state while SQL steps of the instance run here."""
        parts = self.parts
        parts.queue.settled(instance_id)
        log_applied(instance_id, planned)
        plan = planned.plan
        if plan.instance_status in (COMPLETED, FAILED):
            parts.metrics.instance_finished(plan.instance_status, _age(planned))
        database = planned.instance["database"] or self.store.catalog_database
        try:
            if plan.cancel_nodes:
                await parts.canceller.cancel_steps(instance_id, set(plan.cancel_nodes))
            if plan.wake_at is not None:
                parts.queue.wake()
            for task in plan.tasks:
                if task.lease_owner != self.owner_id:
                    parts.queue.wake()
                    continue
                assert task.lease_token is not None  # leased: a timer has no owner
                step = Task(
                    instance_id,
                    task.node_id,
                    task.node_type,
                    task.payload,
                    task.lease_token,
                    owner_of(planned),
                    database,
                )
                if carried is not None and step.node_type == NodeType.SQL:
                    parts.tasks.start(step, carried)
                    carried = None
                else:
                    parts.tasks.start(step)
        finally:
            if carried is not None:  # its step was not started here: roll back, pool it
                parts.tasks.release(owner_of(planned), database, carried, carried=True)
        if database == self.store.catalog_database and parts.running.runs_sql(instance_id):
            self.planning.hold(instance_id, planned)
        else:
            self.planning.drop(instance_id)

    async def applied_in_step(
        self, instance_id: str, planned: Planned, carried: StepConnection | None = None
    ) -> None:
        """act_on for a plan a step's transaction applied (held state may now be checked)."""
        await self.act_on(instance_id, planned, carried)
        if self.verify_held is not None:
            self.parts.background.spawn(self._verify_held(instance_id))

    async def _verify_held(self, instance_id: str) -> None:
        """--verify-held-state: the held state must equal the stored one whenever the
        database would let it be used (same version, no change waiting)."""
        held = self.planning.snapshot(instance_id)
        if held is None:
            return
        try:
            row = await self.store.held_state(instance_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.parts.background.warn(exc, "verify", "event=verify_held_failed error=%r")
            return
        if row is None or row.state is None or row.pending:
            return
        document = json.loads(row.state)
        if document.get("version") != held.instance.get("version"):
            return
        found = differences(held, document)
        if found and self.verify_held is not None:
            self.verify_held(instance_id, found)

    # -- inside a step's transaction ----------------------------------------------------------
    def in_step(self, owner: Owner, database: str) -> InStep:
        """The planning of one SQL step's transaction (step_transaction.InStepPlanning)."""
        return InStep(self.planning, self.parts.slots, (owner.oid, database))

    def chains_own(self, planned: Planned) -> bool:
        """Is the plan's next step one this engine runs on the same connection?"""
        return next_sql_step(planned, self.owner_id) is not None

    # -- the first step -----------------------------------------------------------------------
    def first_step(self, instance_id: str, owner: Owner, state: str, recheck: bool = False) -> None:
        """A new instance's first advance and first SQL step in one transaction on its
        owner's connection (executors.first_step.run_first_step), planned from `state`
        (df._poll's document, or the one its df.start announced: `recheck` it before the
        statement runs); the ordinary advance if that fails."""
        self.first_steps.add(instance_id)
        self.parts.background.spawn(self._first_step(instance_id, owner, state, recheck))

    async def _first_step(self, instance_id: str, owner: Owner, state: str, recheck: bool) -> None:
        try:
            await self._take_first_step(instance_id, owner, state, recheck)
        finally:
            self.first_steps.discard(instance_id)

    async def _take_first_step(
        self, instance_id: str, owner: Owner, state: str, recheck: bool
    ) -> None:
        parts, database = self.parts, self.store.catalog_database
        started = time.monotonic()
        # the state read may have changed since
        waited = recheck or parts.slots.free == 0
        try:
            step = await parts.tasks.step_connection(owner, database, instance_id)
        except (StepFailed, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.info("event=first_step_deferred instance=%s error=%r", instance_id, exc)
            if isinstance(exc, SlotWaitTimedOut):
                parts.tasks.slot_wait_ran_out(instance_id)
            parts.queue.request(instance_id)
            return
        first = FirstTransaction(self, instance_id)
        result = FirstResult(FirstOutcome.NOTHING)
        carried: StepConnection | None = None  # its COMMIT began the next step's transaction
        try:
            first.backend_pid = step.conn.get_server_pid()
            key = uuid.UUID(self.owner_id)
            result = await run_first_step(step, instance_id, key, first, state, waited)
            if result.outcome is not FirstOutcome.NOTHING and first.task is not None:
                seconds = time.monotonic() - started
                parts.metrics.step_finished(NodeType.SQL, StepEnd.COMPLETED, seconds)
            if result.began_next and result.planned is not None:
                carried = step  # act_on runs the next step on it, or releases it
                parts.tasks.steps.carried.add(step)
            await self._after_first_step(instance_id, first, result, carried)
        except (StepFailed, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.info("event=first_step_deferred instance=%s error=%r", instance_id, exc)
        finally:
            cancelled = first.task is not None and self._cancelled(first.task)
            if first.task is not None:
                parts.running.finished(first.task)
            if carried is None:
                parts.tasks.release(owner, database, step)
        nothing = result.outcome is FirstOutcome.NOTHING
        if first.promoted and nothing and first.task is not None and not cancelled:
            parts.tasks.start(first.task)  # its task row is ours: run it as any step
        elif nothing:
            parts.queue.request(instance_id)

    def _cancelled(self, task: Task) -> bool:
        """Did this engine cancel the step (its instance cancelled, a RACE it lost)? Then it
        must not run again: the advance requested instead sees why."""
        running = self.parts.running.get(task.instance_id, task.node_id)
        return running is not None and running.cancelled

    async def _after_first_step(
        self,
        instance_id: str,
        first: FirstTransaction,
        result: FirstResult,
        carried: StepConnection | None,
    ) -> None:
        if result.outcome is FirstOutcome.PROMOTED:  # recorded; the instance needs an advance
            await self.advance(instance_id)
            return
        if result.outcome is FirstOutcome.APPLIED:
            self.parts.counters.first_steps_total += first.task is not None
            if first.task is not None and first.from_pending is not None:  # act_on sees "running"
                log_started(instance_id, first.from_pending)
        if result.planned is not None:
            await self.applied_in_step(instance_id, result.planned, carried)


class AdvanceParts:
    """The parts of the engine an advance acts through (engine.py puts them together)."""

    def __init__(
        self,
        tasks: TaskRunner,
        canceller: Canceller,
        running: Running,
        metrics: EngineMetrics,
        queue: AdvanceQueue,
        background: Background,
    ) -> None:
        self.tasks = tasks
        self.canceller = canceller
        self.running = running
        self.metrics = metrics
        self.counters = metrics.counters
        self.queue = queue
        self.background = background
        self.slots: StepSlots = tasks.steps.slots


def _age(planned: Planned) -> float | None:
    """Seconds since the instance was started (df.instances.created_at), on the database's
    clock; None when the state did not say."""
    created = planned.instance.get("created")
    if created is None:
        return None
    return time.time() + planned.clock_offset - float(created)
