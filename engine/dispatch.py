"""Running leaf tasks: which executor runs a task, its retries through an outage, and the
step connection a finished SQL step keeps for the next (chaining), hands over to another
step of its owner, or releases.

How an SQL step itself runs is engine/executors/sql.py; how its instance advances is
engine/advance.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

import asyncpg

from engine.connections.outage import MAX_LOSSES_WHILE_RUNNING, connection_lost, retry_delay
from engine.connections.pool import StepConnections
from engine.connections.step_connection import StepConnection
from engine.errors import OwnerRefused, SlotWaitTimedOut, StepFailed, StepNotRun
from engine.executors.http import HttpClient, run_http_step
from engine.executors.sql import StepOutcome, run_sql_step
from engine.metrics import EngineMetrics, StepEnd
from engine.planner.kinds import HTTP_TYPES, TIMER_TYPES, NodeType
from engine.records import Claimed, Owner, Task
from engine.running import Background, Running, RunningStep
from engine.scheduler import AdvanceQueue
from engine.settings import EngineSettings
from engine.store import Store

if TYPE_CHECKING:
    from engine.advance import Advancer

log = logging.getLogger("pgdurable.engine")
SLEEP_RESULT = '{{"slept": true, "seconds": {seconds}}}'
RETRY = "retry"  # df._fail_or_retry: the step waits for its next attempt
FINAL = "final"  # df._fail_or_retry: not retried; complete with the response it carries


class TaskRunner:
    """Starts and runs the leaf tasks leased to this engine."""

    advancer: Advancer  # set by the engine once both exist

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        steps: StepConnections,
        http: HttpClient,
        running: Running,
        metrics: EngineMetrics,
        queue: AdvanceQueue,
        background: Background,
    ) -> None:
        self.settings = settings
        self.store = store
        self.steps = steps
        self.http = http
        self.running = running
        self.metrics = metrics
        self.counters = metrics.counters
        self.queue = queue
        self.background = background
        self._slot_waits_spent: dict[str, float] = {}  # instance -> when (slot_wait_ran_out)

    def start_claimed(self, claimed: Claimed) -> None:
        task = claimed.task
        if claimed.attempts > 1:  # leased before, and that lease expired
            self.metrics.lease_recovered()
            log.info(
                "event=lease_taken_over instance=%s node=%s node_type=%s attempt=%d",
                *(task.instance_id, task.node_id, task.node_type, claimed.attempts),
            )
        self.start(task)

    def start(self, task: Task, carried: StepConnection | None = None) -> None:
        """Run a task in the background; an SQL one on `carried` when its transaction was
        begun there."""
        self.running.track(RunningStep(task))
        self.background.spawn(self._run(task, carried))

    async def _run(self, task: Task, carried: StepConnection | None = None) -> None:
        """Run a leaf task (an SQL one on `carried` when its transaction was begun there).

        A task that cannot reach PostgreSQL, or whose connection dies, waits and runs
        again as long as it holds its task row (_still_leased); its SQL either did not run
        or was rolled back with its connection. Only an error of the step itself fails it.
        """
        outage = self.background.outage
        attempt = losses = 0
        started = time.monotonic()
        try:
            while True:
                try:
                    await self._run_once(task, carried, started)
                    outage.answered()
                    return
                except Exception as exc:
                    if not connection_lost(exc):
                        raise
                    outage.failed(exc, "step")
                    losses += isinstance(exc, StepNotRun) and exc.started
                    if losses >= MAX_LOSSES_WHILE_RUNNING:
                        raise StepFailed(
                            f"SQL execution failed: {exc} (the step's connection was lost "
                            f"{losses} times while it ran)",
                            retryable=True,
                        ) from exc
                carried = None  # went with the connection (released by _pass_on)
                attempt += 1
                if not await self._still_leased(task, attempt):
                    return
        except StepFailed as exc:
            await self._fail(task, exc, started)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "event=task_error instance=%s node=%s error=%r", task.instance_id, task.node_id, exc
            )  # the lease expires; retried
        finally:
            self.running.finished(task)

    async def _still_leased(self, task: Task, attempt: int) -> bool:
        """After a task met an outage: wait (backing off) until PostgreSQL answers, then
        ask whether the task row still carries the task's lease token.

        This decides what a connection that died during the step's COMMIT left behind,
        which the engine cannot know from the connection: the step's transaction deletes
        that row as it records the result, so the row is there exactly when the step did
        not commit (run it again), and gone when it committed (its result is recorded:
        running it again would duplicate it) or when the task was abandoned or taken over
        by another engine after its lease expired. A backend that lost its client while
        committing may still be committing when we look: the re-run's record then waits
        for that row lock, finds the row gone, and its whole transaction, statement
        included, rolls back (40001): never a second effect."""
        outage = self.background.outage
        while True:
            await asyncio.sleep(retry_delay(attempt))
            try:
                leased = await self.store.task_still_leased(task)
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not connection_lost(exc):
                    raise
                outage.failed(exc, "step")
                attempt += 1
        outage.answered()
        if not leased:  # committed, or not ours any more: whatever comes next is recorded
            log.info("event=step_settled instance=%s node=%s", task.instance_id, task.node_id)
            self.queue.request(task.instance_id)
            await self._claim_own_leases(task.instance_id)
        return leased

    async def _claim_own_leases(self, instance_id: str) -> None:
        """Start the instance's tasks leased to this engine that it does not run: the plan
        a step's transaction applied before its connection died may have leased the next
        steps to us (else they would wait for their leases to expire)."""
        running = [uuid.UUID(r.task.token) for r in self.running.all()]
        try:
            claimed = await self.store.claim_own_leases(instance_id, running)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.background.warn(exc, "step", "event=claim_own_leases_failed error=%r")
            return  # their leases expire and the poll takes them
        for one in claimed:
            self.start_claimed(one)

    def _finished(self, task: Task, end: StepEnd, started: float) -> None:
        self.metrics.step_finished(task.node_type, end, time.monotonic() - started)

    async def _run_once(self, task: Task, carried: StepConnection | None, started: float) -> None:
        """One attempt at a leaf task (begun at `started`), then the instance's advance."""
        if task.node_type == NodeType.SQL:
            outcome, carried = await self._run_sql(task, carried)
            self._finished(task, StepEnd.COMPLETED, started)  # recorded (committed)
            planned = outcome.planned
            if planned is not None:  # advanced inside the step's own transaction
                if planned.from_memory:
                    self.counters.in_step_advances_held_total += 1
                else:
                    self.counters.in_step_advances_loaded_total += 1
                await self.advancer.applied_in_step(task.instance_id, planned, carried)
                return
        elif task.node_type in TIMER_TYPES:
            raw = (
                task.payload or ""
                if task.node_type == NodeType.WAIT_SCHEDULE
                else SLEEP_RESULT.format(seconds=int(task.payload or 0))
            )
            await self.store.complete_step(task, raw, "exactly-once")  # a timer has no effect
            self._finished(task, StepEnd.COMPLETED, started)
        elif task.node_type in HTTP_TYPES:
            if not await self._run_http(task):
                self._finished(task, StepEnd.CANCELLED, started)
                return  # abandoned: whoever abandoned it advanced the instance
            self._finished(task, StepEnd.COMPLETED, started)
        await self.advancer.advance(task.instance_id)

    async def step_connection(
        self, owner: Owner, database: str, instance_id: str
    ) -> StepConnection:
        """A step slot and a connection as `owner` (one whose transaction a finishing step
        began, when one was handed over with the slot); release() gives both back.
        SlotWaitTimedOut after waiting --execution-acquire-timeout for the slot, counting
        the wait of the instance's first step before it (slot_wait_ran_out). A gone owner
        fails the step (pg_durable's text) before anything is taken."""
        if owner.gone:
            raise StepFailed(str(OwnerRefused.gone(instance_id)), OwnerRefused.sqlstate)
        limit = self.settings.execution_acquire_timeout
        # spent by its first step already: a slot free now, or the step fails
        within = 0.0 if self._slot_waits_spent.pop(instance_id, None) is not None else limit
        try:
            handed = await self.steps.slots.take((owner.oid, database), instance_id, within)
        except TimeoutError:
            raise SlotWaitTimedOut(self.settings.max_user_connections, limit) from None
        if handed is not None:
            self.steps.carried.discard(handed)
            self.counters.handed_over_steps_total += 1
            return handed
        try:
            return await self.steps.acquire(owner, database)
        except BaseException:
            self.steps.slots.give()
            raise

    def slot_wait_ran_out(self, instance_id: str) -> None:
        """A new instance's first step waited --execution-acquire-timeout for a slot in
        vain: its step, run next as an ordinary task, takes a slot free at once or fails
        (the wait is the step's, not each path's). Entries of instances whose step never
        came (cancelled meanwhile) go after a minute."""
        now = time.monotonic()
        spent = self._slot_waits_spent
        for stale in [i for i, at in spent.items() if at < now - 60]:
            del spent[stale]
        spent[instance_id] = now

    async def _run_sql(
        self, task: Task, carried: StepConnection | None
    ) -> tuple[StepOutcome, StepConnection | None]:
        """Run an SQL step on `carried` (its slot and begun transaction), else on a pooled
        connection. Returns what it did, and the connection when its COMMIT began the
        transaction of the step the plan applied leased to this engine (the caller then
        runs that step on it, or releases it)."""
        if carried is None:
            step = await self.step_connection(task.owner, task.database, task.instance_id)
        else:
            step = carried
            self.steps.carried.discard(step)
            self.counters.chained_steps_total += 1
            self.counters.pipelined_steps_total += step.ahead is not None
        running = self.running.get(task.instance_id, task.node_id)
        if running is not None:
            running.backend_pid = step.conn.get_server_pid()
        self.log_sql(task)
        outcome = None
        try:
            if running is not None and running.cancelled:  # while it waited for a slot
                raise StepFailed("canceling statement due to user request", sqlstate="57014")
            if task.database == self.settings.catalog_database:
                in_step = self.advancer.in_step(task.owner, task.database)
                outcome = await run_sql_step(step, task, None, in_step)
            else:
                outcome = await run_sql_step(step, task, self.store.complete_step)
        finally:
            if running is not None:  # never cancel a pooled backend doing other work
                running.backend_pid = None
            kept = self._pass_on(task, step, outcome)
        return outcome, kept

    def _pass_on(
        self, task: Task, step: StepConnection, outcome: StepOutcome | None
    ) -> StepConnection | None:
        """After a step: keep its connection and slot for the instance's next step (returned:
        the caller runs that step on it), hand them to a step of the owner waiting for a
        slot, or release them (resetting the connection off the critical path)."""
        if outcome is not None and outcome.planned is not None and outcome.began_next:
            own_next = self.advancer.chains_own(outcome.planned)
            if own_next or self.steps.slots.hand((task.owner.oid, task.database), step):
                self.steps.carried.add(step)  # until the step that runs on it takes it
                return step if own_next else None
        self.release(task.owner, task.database, step)
        return None

    async def _run_http(self, task: Task) -> bool:
        """Run an HTTP step and record its result (at-least-once: a request cannot commit
        with its record). False when it was abandoned (a RACE loser, a lost lease)."""
        request = asyncio.ensure_future(
            run_http_step(self.http, self.store, task, self.settings.enable_superuser_instances)
        )
        running = self.running.get(task.instance_id, task.node_id)
        if running is not None:
            running.request = request
        try:
            await asyncio.wait({request})
        except asyncio.CancelledError:
            request.cancel()
            raise
        if request.cancelled():
            log.info("event=http_abandoned instance=%s node=%s", task.instance_id, task.node_id)
            return False
        await self.store.complete_step(task, request.result(), "at-least-once")
        return True

    def release(
        self, owner: Owner, database: str, step: StepConnection, carried: bool = False
    ) -> None:
        """Give a step connection and its slot back, in the background (`carried`: one kept
        for a next step that was not started; its begun transaction is rolled back)."""
        if carried:
            self.steps.carried.discard(step)
        self.background.spawn(self._release(owner, database, step))

    async def _release(self, owner: Owner, database: str, step: StepConnection) -> None:
        try:
            await self.steps.release(owner, database, step)
        finally:
            self.steps.slots.give()
            self.queue.slot_freed()

    def log_sql(self, task: Task) -> None:
        """With --log-workflow-sql, the step's substituted statement (info: asked for, so it
        shows without the debug lines); without, it is never logged."""
        if self.settings.log_workflow_sql:
            log.info(
                "event=workflow_sql instance=%s node=%s sql=%r",
                *(task.instance_id, task.node_id, task.payload),
            )

    async def _fail(self, task: Task, failure: StepFailed, started: float) -> None:
        """Record a failed attempt (begun at `started`): the step waits for its next attempt
        when its failure policy allows one (the scheduler then looks for the new due time),
        else it fails (or, for a final HTTP 429, completes with that response) and its
        instance advances."""
        error = str(failure)  # the node's error text: never the step's SQL (--log-workflow-sql)
        sqlstate = vars(failure).get("sqlstate")  # set when the failure had one (not XX000)
        running = self.running.get(task.instance_id, task.node_id)
        cancelled = running is not None and running.cancelled
        if cancelled:  # its instance cancelled, a RACE lost
            log.info(
                "event=step_cancelled instance=%s node=%s node_type=%s",
                *(task.instance_id, task.node_id, task.node_type),
            )
        else:
            log.info(
                "event=step_failed instance=%s node=%s node_type=%s sqlstate=%s "
                "retryable=%s message=%r",
                *(task.instance_id, task.node_id, task.node_type, sqlstate),
                *(failure.retryable, error),
            )
        decided = None
        try:
            decided = await self.store.fail_or_retry(task, failure)
            if decided == RETRY:
                self.queue.wake()
            elif decided == FINAL and failure.result is not None:
                await self.store.complete_step(task, failure.result, "at-least-once")
                await self.advancer.advance(task.instance_id)
            elif decided is not None:
                await self.advancer.advance(task.instance_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # the lease expires and the step runs again, to fail again
            message = f"event=fail_record_error instance={task.instance_id} error=%r"
            self.background.warn(exc, "step", message)
        finally:
            self._finished(task, _failed_end(cancelled, decided, failure), started)


def _failed_end(cancelled: bool, decided: str | None, failure: StepFailed) -> StepEnd:
    """How a failed attempt ends on /metrics: cancelled by this engine, retried later (its
    failure policy), completed (a final HTTP 429 keeps its response), else failed."""
    if cancelled:
        return StepEnd.CANCELLED
    if decided == RETRY:
        return StepEnd.RETRIED
    if decided == FINAL and failure.result is not None:
        return StepEnd.COMPLETED
    return StepEnd.FAILED
