"""The engine: installs the catalog, advances instances, runs leaf tasks, recovers leases.

Wake-ups come from three places: NOTIFY on channel df_wake (df.start, df.cancel,
df.signal: every call site, every pgdurable process; the payload says nothing, since any role
may listen or notify), `wake()` (work for the scheduler), and a slow poll that also catches
due timers and expired leases. Each runs a scheduler pass, which reads what is due from the
catalog. When the proxy sees a df.start commit it only wakes the scheduler if the
listener is down (`started_through_proxy()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, cast

import asyncpg

from engine.connections.outage import MAX_LOSSES_WHILE_RUNNING, Outage, connection_lost, retry_delay
from engine.connections.runners import Runners
from engine.errors import StepFailed, StepNotRun
from engine.executors.http import HttpClient, run_http_step
from engine.executors.http_request import HTTP_TYPES
from engine.executors.new_transaction import NewStartRequest, NewTransactionStarts
from engine.executors.sql import (
    FirstOutcome,
    StepConnections,
    Task,
    began_next_step,
    run_first_step,
    run_sql_step,
)
from engine.in_step import (
    EngineCounters,
    EngineParts,
    FirstTransaction,
    RunningStep,
    StepAdvance,
    next_sql_step,
)
from engine.migrations import migrate
from engine.planner.graph import TaskLease
from engine.planner.held import Planned, Planning, differences
from engine.queries import q
from engine.settings import EngineSettings

log = logging.getLogger("pgdurable.engine")
CLAIM_BATCH = 64
ADVANCE_BATCH = 64  # instances loaded, planned and applied in one transaction
LOCKED_RETRY_DELAY = 0.005  # seconds before advancing again an instance found locked,
LOCKED_RETRIES = 8  # doubled at each retry (about 1.3 s in all); then the poll finds it
# The engine's queries look rows up by key: never by a sequential scan planned while a table
# was nearly empty (see 0010_perf.sql), and never JIT-compiled.
ENGINE_SESSION = {"enable_seqscan": "off", "jit": "off"}


SLEEP_RESULT = '{{"slept": true, "seconds": {seconds}}}'


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The admin pool runs only the engine's own queries: no session state to reset."""


class Engine:
    """One engine per pgdurable process; several processes may share a database."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.owner_id = str(uuid.uuid4())
        self.lease = TaskLease(self.owner_id, settings.lease_seconds)
        self.planning = Planning(
            self.lease, settings.enable_superuser_instances, settings.min_loop_iteration_seconds
        )
        runners = None
        if settings.runner_secret is not None:
            runners = Runners(settings.runner_secret, self._require_pool)
        self.steps = StepConnections(settings, runners)
        self.new_starts = NewTransactionStarts(
            self._require_pool,
            self.steps.connect,
            settings.catalog_database,
            settings.max_new_transaction_starts,
            settings.new_transaction_start_timeout,
        )
        self.http = HttpClient(settings.http)
        self.counters = EngineCounters()
        self.outage = Outage()  # PostgreSQL unreachable: logged once, then the count
        self.pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._to_advance: dict[str, None] = {}  # instance ids, in arrival order
        self._advance_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: dict[tuple[str, str], RunningStep] = {}
        self._sql_steps: dict[str, int] = {}  # instance id -> SQL steps of it in _running
        self._locked_retries: dict[str, int] = {}  # instance id -> advances retried
        self._first_steps: set[str] = set()  # instances whose first step is being taken
        # the last poll claimed all the tasks it asked for: more may be claimable (orphans
        # after a crash), so a step slot that frees up wakes the scheduler
        self._claims_left = False
        self.parts = EngineParts(
            self.planning,
            self.owner_id,
            settings.catalog_database,
            self.counters,
            self._running,
            self._track,
            self._require_pool,
        )
        self._loops: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.version = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start in the background: the catalog is installed as soon as PostgreSQL answers."""
        self._loops = [asyncio.create_task(self._run(), name="pgdurable-engine")]
        self._loops[0].add_done_callback(self._on_run_done)

    def _on_run_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self.failed.done():
            log.error("event=engine_failed error=%r", task.exception())
            self.failed.set_result(cast(BaseException, task.exception()))

    async def started(self) -> None:
        """Wait until the catalog is installed and the loops run (tests, benchmarks)."""
        await self._ready.wait()

    async def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                await self._boot()
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("event=engine_boot_retry error=%r delay=%.1f", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._ready.set()
        self.wake()
        loops = [
            asyncio.create_task(self._scheduler(), name="pgdurable-scheduler"),
            asyncio.create_task(self._advancer(), name="pgdurable-advancer"),
            asyncio.create_task(self._lease_keeper(), name="pgdurable-leases"),
        ]
        try:
            await asyncio.gather(*loops)
        finally:  # both loops end before stop() closes the pools they use
            for loop_task in loops:
                loop_task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _boot(self) -> None:
        conn = await asyncpg.connect(self.settings.admin_dsn)
        try:
            self.version = await migrate(conn)
            await self._publish(conn)
        finally:
            await conn.close()
        self.pool = await asyncpg.create_pool(
            self.settings.admin_dsn,
            min_size=0,  # no floor to restore (with a traceback) while PostgreSQL is away
            max_size=self.settings.admin_pool_size,
            reset=_keep_session,
            server_settings=ENGINE_SESSION,
        )
        await self._listen()

    async def _publish(self, conn: asyncpg.Connection) -> None:
        s = self.settings
        settings = {
            "enable_superuser_instances": "on" if s.enable_superuser_instances else "off",
            "list_instances_max_limit": str(s.list_instances_max_limit),
            "max_user_connections": str(s.max_user_connections),
            "new_transaction_start_timeout": str(s.new_transaction_start_timeout),
            "runner_roles": "on" if s.runner_secret is not None else "off",
        }
        for name, value in settings.items():
            await conn.execute(q("publish_setting"), name, value)
        await conn.execute(q("worker_ready"), self.version)
        await conn.execute(q("heartbeat"), uuid.UUID(self.owner_id))

    async def _listen(self) -> None:
        self._listener = await asyncpg.connect(self.settings.admin_dsn)
        await self._listener.add_listener("df_wake", self._notified)

    def _notified(self, *args: object) -> None:
        """A df_wake notification: look for work now. Its payload is ignored (any role may
        NOTIFY df_wake): what to advance, and as whom, is read from the catalog."""
        self.wake()

    def _new_instance(self, row: asyncpg.Record, first_steps: int) -> bool:
        """A new instance whose steps run in the catalog's database: when a step connection
        is free and no advance waits, its first advance and first step share one
        transaction on its owner's connection, planned from the state the poll read (the
        owner read from df.instances). False when it is advanced as usual."""
        instance_id, owner, state = row["instance_id"], row["owner"], row["payload"]
        if None in (owner, state) or self._to_advance or self.steps.slots.free <= first_steps:
            self._request_advance(instance_id)
            return False
        self._first_steps.add(instance_id)
        self._spawn(self._first_step(instance_id, owner, state))
        return True

    async def stop(self) -> None:
        """Stop the loops; in-flight steps are abandoned (their leases expire)."""
        self._stop.set()
        self._wake.set()
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.terminate()
        await self.steps.close()
        await self.http.close()
        if self.pool is not None:
            self.pool.terminate()

    def wake(self) -> None:
        """Look for work now."""
        self._wake.set()

    def start_new(self, login_role: str, detail: str) -> None:
        """A df.start(..., transaction_mode => 'new') asked through a session of `login_role`."""
        try:
            request = NewStartRequest.from_detail(detail)
        except (ValueError, KeyError, TypeError):
            log.warning("event=new_start_unreadable role=%s", login_role)
            return
        self._spawn(self._start_new(login_role, request))

    async def _start_new(self, login_role: str, request: NewStartRequest) -> None:
        if self.pool is None:  # not booted: the caller's df.start times out with a clear text
            log.warning("event=new_start_before_ready request=%s", request.request)
            return
        try:
            if await self.new_starts.handle(login_role, request):
                self.wake()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("event=new_start_error request=%s error=%r", request.request, exc)

    def started_through_proxy(self) -> None:
        """A df.start committed through the proxy: its NOTIFY advances it, unless the
        listener is down, in which case the scheduler looks now."""
        if self._listener is None or self._listener.is_closed():
            self.wake()

    # -- loops --------------------------------------------------------------------------------
    async def _scheduler(self) -> None:
        pause = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                await self._ensure_listener()
                due = await self._poll()
                pause = (
                    self.settings.poll_interval
                    if due is None
                    else max(0.0, min(self.settings.poll_interval, float(due)))
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._warn(exc, "scheduler", "event=scheduler_error error=%r")
                await asyncio.sleep(min(1.0, self.settings.poll_interval))
                continue
            self.outage.answered()

    async def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.is_closed():
            await self._listen()

    async def _lease_keeper(self) -> None:
        pool = self._require_pool()
        interval = self.settings.lease_seconds / 3
        while not self._stop.is_set():
            await asyncio.sleep(interval)
            tokens = [uuid.UUID(r.task.token) for r in self._running.values() if r.leased]
            try:
                if tokens:
                    kept = await pool.fetch(
                        q("renew_leases"),
                        uuid.UUID(self.owner_id),
                        self.settings.lease_seconds,
                        tokens,
                    )
                    lost = {str(t) for t in tokens} - {str(r["lease_token"]) for r in kept}
                    await self._cancel_lost(lost)
                await pool.execute(q("heartbeat"), uuid.UUID(self.owner_id))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._warn(exc, "leases", "event=lease_renewal_failed error=%r")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        if connection_lost(exc):
            self.outage.failed(exc, "background")
        else:  # a bug: say where, once per occurrence
            log.error("event=background_task_failed error=%r", exc, exc_info=exc)

    def _warn(self, exc: BaseException, where: str, message: str) -> None:
        """Log an error of the engine's loops: an outage once, anything else each time."""
        if connection_lost(exc):
            self.outage.failed(exc, where)
        else:
            log.warning(message, exc)

    def _require_pool(self) -> asyncpg.Pool:
        assert self.pool is not None, "engine not started"
        return self.pool

    # -- advancing ----------------------------------------------------------------------------
    async def _poll(self) -> float | None:
        """One scheduler pass: start the tasks claimed, advance the instances due; returns
        the seconds until the next timer (None: nothing scheduled)."""
        free = self.steps.slots.free
        claims = max(0, min(free, CLAIM_BATCH))  # what we can run now
        # a new instance's state only where its first step can be taken (_new_instance)
        documents = 0 if self._to_advance else free
        rows = await self._require_pool().fetch(
            q("poll"),
            uuid.UUID(self.owner_id),
            self.settings.lease_seconds,
            256,
            claims,
            list(self._first_steps),
            documents,
        )
        due = None
        claimed = 0
        first_steps = 0
        for r in rows:
            if r["kind"] == "new":
                first_steps += self._new_instance(r, first_steps)
            elif r["kind"] == "advance":
                self._request_advance(r["instance_id"])
            elif r["kind"] == "task":
                claimed += 1
                self._start_claimed(r)
            else:
                due = r["due"]
        if claims > 0:  # (with no free slot we learnt nothing about what is claimable)
            self._claims_left = claimed == claims
        return due

    def _request_advance(self, instance_id: str) -> None:
        self._to_advance[instance_id] = None
        self._advance_ready.set()

    async def _advancer(self) -> None:
        """Advance the instances asked for, as many per transaction as have arrived."""
        while not self._stop.is_set():
            await self._advance_ready.wait()
            self._advance_ready.clear()
            while self._to_advance:
                batch = list(itertools.islice(self._to_advance, ADVANCE_BATCH))
                for instance_id in batch:
                    del self._to_advance[instance_id]
                try:
                    await self.advance_many(batch)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    message = f"event=advance_error instances={len(batch)} error=%r"
                    self._warn(exc, "advance", message)
                    self.wake()  # their _advance rows stay: the scheduler finds them again
                except Exception:  # a planner bug must not stop every other advance
                    log.exception("event=advance_failed instances=%s", batch)

    async def advance_many(self, instance_ids: list[str]) -> None:
        """advance() for several instances in one transaction; one by one if that fails."""
        if len(instance_ids) == 1:
            await self.advance(instance_ids[0])
            return
        planned: list[tuple[str, Planned]] = []
        skipped: list[str] = []  # not loaded: already advanced, or locked by another
        try:
            async with self._require_pool().acquire() as conn, conn.transaction():
                for r in await conn.fetch(q("load_many"), instance_ids):
                    if r["state"] is None:
                        skipped.append(r["id"])
                        continue
                    try:
                        planned.append((r["id"], self.planning.from_document(r["state"])))
                    except Exception:  # a planner bug: this one stays due, the others go on
                        log.exception("event=plan_failed instance=%s", r["id"])
                if planned:
                    await conn.execute(
                        q("apply_many"),
                        [p[0] for p in planned],
                        [p[1].plan.to_json() for p in planned],
                    )
        except asyncpg.PostgresError as exc:
            if connection_lost(exc):
                raise  # their _advance rows stay
            log.warning("event=advance_batch_failed instances=%d error=%r", len(instance_ids), exc)
            for instance_id in instance_ids:
                await self.advance(instance_id)
            return
        if skipped:
            await self._retry_locked(skipped)
        self.counters.advances_total += len(planned)
        for instance_id, one in planned:
            await self._act_on(instance_id, one)

    async def advance(self, instance_id: str) -> None:
        """Load, plan and apply one instance's next steps in one transaction."""
        pool = self._require_pool()
        async with pool.acquire() as conn, conn.transaction():
            text = await conn.fetchval(q("load_for_advance"), instance_id)
            if text is not None:
                planned = self.planning.from_document(text)
                await conn.execute(q("apply_plan"), instance_id, planned.plan.to_json())
        if text is None:
            await self._retry_locked([instance_id])
            return
        self.counters.advances_total += 1
        await self._act_on(instance_id, planned)

    async def _retry_locked(self, instance_ids: list[str]) -> None:
        """Instances not loaded although an advance is due are being changed by another
        transaction right now (a step recording its result, a parallel step's advance):
        try again in a moment rather than at the next poll, backing off (a transaction left
        open after df.cancel holds its instance row until it ends)."""
        due = [r[0] for r in await self._require_pool().fetch(q("advances_due"), instance_ids)]
        for instance_id in set(instance_ids) - set(due):  # advanced already: nothing to retry
            self._locked_retries.pop(instance_id, None)
        for instance_id in due:
            tries = self._locked_retries.get(instance_id, 0)
            if tries < LOCKED_RETRIES:
                self._locked_retries[instance_id] = tries + 1
                loop = asyncio.get_running_loop()
                delay = LOCKED_RETRY_DELAY * 2**tries
                loop.call_later(delay, self._request_advance, instance_id)
            else:
                self._locked_retries.pop(instance_id, None)  # the poll takes over

    async def _act_on(
        self, instance_id: str, planned: Planned, carried: asyncpg.Connection | None = None
    ) -> None:
        """After a plan committed: cancel abandoned steps, start the tasks leased to us (the
        plan's one SQL step on `carried`, whose transaction began with the last step's
        COMMIT), and hold the state while SQL steps of the instance run here."""
        self._locked_retries.pop(instance_id, None)
        plan = planned.plan
        database = planned.instance["database"] or self.settings.catalog_database
        try:
            if plan.cancel_nodes:
                await self._cancel_steps(instance_id, set(plan.cancel_nodes))
            if plan.wake_at is not None:
                self.wake()
            for task in plan.tasks:
                if task["lease_owner"] != self.owner_id:
                    self.wake()
                    continue
                step = Task(
                    instance_id,
                    task["node_id"],
                    task["node_type"],
                    task["payload"],
                    task["lease_token"],
                    planned.owner,
                    database,
                )
                if carried is not None and step.node_type == "SQL":
                    self._start_task(step, carried)
                    carried = None
                else:
                    self._start_task(step)
        finally:
            if carried is not None:  # its step was not started here: roll back, pool it
                self.steps.carried.discard(carried)
                self._spawn(self._release_step(planned.owner, database, carried))
        if database == self.settings.catalog_database and self._runs_sql(instance_id):
            self.planning.hold(instance_id, planned)
        else:
            self.planning.drop(instance_id)

    async def _act_on_applied_in_step(
        self, instance_id: str, planned: Planned, carried: asyncpg.Connection | None = None
    ) -> None:
        """_act_on for a plan a step's transaction applied (held state may now be checked)."""
        await self._act_on(instance_id, planned, carried)
        if self.settings.verify_held_state:
            self._spawn(self._verify_held(instance_id))

    def _runs_sql(self, instance_id: str) -> bool:
        """Does this engine run SQL steps of the instance right now?"""
        return instance_id in self._sql_steps

    # -- leaf tasks ------------------------------------------------------------------------------
    def _start_claimed(self, r: asyncpg.Record) -> None:
        if r["attempts"] > 1:
            log.info(
                "event=task_recovered instance=%s node=%s attempt=%d",
                r["instance_id"],
                r["node_id"],
                r["attempts"],
            )
        self._start_task(
            Task(
                r["instance_id"],
                r["node_id"],
                r["node_type"],
                r["payload"],
                str(r["lease_token"]),
                r["owner"] or "",
                r["database"] or self.settings.catalog_database,
            )
        )

    def _start_task(self, task: Task, carried: asyncpg.Connection | None = None) -> None:
        self._track(RunningStep(task))
        self._spawn(self._run_task(task, carried))

    def _track(self, running: RunningStep) -> None:
        task = running.task
        key = (task.instance_id, task.node_id)
        if task.node_type == "SQL" and key not in self._running:
            self._sql_steps[task.instance_id] = self._sql_steps.get(task.instance_id, 0) + 1
        self._running[key] = running

    def _finished(self, task: Task) -> None:
        """Forget a step that ended; the held state goes with the instance's last SQL step."""
        if self._running.pop((task.instance_id, task.node_id), None) is None:
            return
        if task.node_type == "SQL":
            left = self._sql_steps.pop(task.instance_id, 1) - 1
            if left > 0:
                self._sql_steps[task.instance_id] = left
            else:
                self.planning.drop(task.instance_id)

    async def _run_task(self, task: Task, carried: asyncpg.Connection | None = None) -> None:
        """Run a leaf task; an SQL one on `carried` when its transaction was begun there.

        A task that cannot reach PostgreSQL, or whose connection dies, waits and runs
        again as long as it holds its task row (_still_leased); its SQL either did not run
        or was rolled back with its connection. Only an error of the step itself fails it.
        """
        attempt = losses = 0
        try:
            while True:
                try:
                    await self._run_task_once(task, carried)
                    self.outage.answered()
                    return
                except Exception as exc:
                    if not connection_lost(exc):
                        raise
                    self.outage.failed(exc, "step")
                    losses += isinstance(exc, StepNotRun) and exc.started
                    if losses >= MAX_LOSSES_WHILE_RUNNING:
                        raise StepFailed(
                            f"SQL execution failed: {exc} (the step's connection was lost "
                            f"{losses} times while it ran)"
                        ) from exc
                carried = None  # went with the connection (released by _pass_on)
                attempt += 1
                if not await self._still_leased(task, attempt):
                    return
        except StepFailed as exc:
            await self._fail(task, str(exc))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "event=task_error instance=%s node=%s error=%r", task.instance_id, task.node_id, exc
            )  # the lease expires; retried
        finally:
            self._finished(task)

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
        while True:
            await asyncio.sleep(retry_delay(attempt))
            try:
                leased = await self._require_pool().fetchval(
                    q("task_still_leased"), task.instance_id, task.node_id, uuid.UUID(task.token)
                )
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not connection_lost(exc):
                    raise
                self.outage.failed(exc, "step")
                attempt += 1
        self.outage.answered()
        if not leased:  # committed, or not ours any more: whatever comes next is recorded
            log.info("event=step_settled instance=%s node=%s", task.instance_id, task.node_id)
            self._request_advance(task.instance_id)
            await self._claim_own_leases(task.instance_id)
        return bool(leased)

    async def _claim_own_leases(self, instance_id: str) -> None:
        """Start the instance's tasks leased to this engine that it does not run: the plan
        a step's transaction applied before its connection died may have leased the next
        steps to us (else they would wait for their leases to expire)."""
        running = [uuid.UUID(r.task.token) for r in self._running.values()]
        try:
            rows = await self._require_pool().fetch(
                q("claim_own_leases"),
                instance_id,
                uuid.UUID(self.owner_id),
                running,
                self.settings.lease_seconds,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._warn(exc, "step", "event=claim_own_leases_failed error=%r")
            return  # their leases expire and the poll takes them
        for r in rows:
            self._start_claimed(r)

    async def _run_task_once(self, task: Task, carried: asyncpg.Connection | None) -> None:
        """One attempt at a leaf task (see _run_task)."""
        if task.node_type == "SQL":
            folded, carried = await self._run_sql(task, carried)
            if folded is not None:  # advanced inside the step's own transaction
                if folded.from_memory:
                    self.counters.in_step_advances_held_total += 1
                else:
                    self.counters.in_step_advances_loaded_total += 1
                await self._act_on_applied_in_step(task.instance_id, folded, carried)
                return
        elif task.node_type in ("SLEEP", "WAIT_SCHEDULE"):
            raw = (
                task.payload or ""
                if task.node_type == "WAIT_SCHEDULE"
                else SLEEP_RESULT.format(seconds=int(task.payload or 0))
            )
            await self._record_result(task, raw, "exactly-once")  # a timer has no effect
        elif task.node_type in HTTP_TYPES and not await self._run_http(task):
            return  # abandoned: whoever abandoned it advanced the instance
        await self.advance(task.instance_id)

    async def _step_connection(
        self, owner: str, database: str, instance_id: str
    ) -> asyncpg.Connection:
        """A step slot and a connection as `owner` (one whose transaction a finishing step
        began, when one was handed over with the slot); _release_step gives both back."""
        handed = await self.steps.slots.take((owner, database), instance_id)
        if handed is not None:
            self.steps.carried.discard(handed)
            self.counters.handed_over_steps_total += 1
            return handed
        try:
            return await self.steps.acquire(owner, database)
        except BaseException:
            self.steps.slots.give()
            raise

    async def _run_sql(
        self, task: Task, carried: asyncpg.Connection | None
    ) -> tuple[Planned | None, asyncpg.Connection | None]:
        """Run an SQL step on `carried` (its slot and begun transaction), else on a pooled
        connection. Returns the plan applied in the step's transaction, and the connection
        when its COMMIT began the transaction of the step that plan leased to this engine
        (the caller then runs that step on it, or releases it)."""
        if carried is None:
            conn = await self._step_connection(task.owner, task.database, task.instance_id)
        else:
            conn = carried
            self.steps.carried.discard(conn)
            self.counters.chained_steps_total += 1
        running = self._running.get((task.instance_id, task.node_id))
        if running is not None:
            running.backend_pid = conn.get_server_pid()
        key = (task.owner, task.database)
        advance = StepAdvance(self.planning, lambda: self.steps.slots.wanted(key))
        planned = kept = None
        try:
            in_catalog = task.database == self.settings.catalog_database
            elsewhere = None if in_catalog else self._record_result
            if await run_sql_step(conn, task, elsewhere, advance if in_catalog else None):
                planned = advance.planned[-1] if advance.planned else None
        finally:
            if running is not None:  # never cancel a pooled backend doing other work
                running.backend_pid = None
            kept = self._pass_on(task, conn, planned)
        return planned, kept

    def _pass_on(
        self, task: Task, conn: asyncpg.Connection, planned: Planned | None
    ) -> asyncpg.Connection | None:
        """After a step: keep its connection and slot for the instance's next step (returned:
        the caller runs that step on it), hand them to a step of the owner waiting for a
        slot, or release them (resetting the connection off the critical path)."""
        if planned is not None and began_next_step(conn):
            own_next = next_sql_step(planned, self.owner_id) is not None
            if own_next or self.steps.slots.hand((task.owner, task.database), conn):
                self.steps.carried.add(conn)  # until the step that runs on it takes it
                return conn if own_next else None
        self._spawn(self._release_step(task.owner, task.database, conn))
        return None

    async def _first_step(self, instance_id: str, owner: str, state: str) -> None:
        """A new instance's first advance and first SQL step in one transaction on its
        owner's connection (steps.run_first_step), planned from `state` (df._poll's
        document); the ordinary advance if that fails."""
        try:
            await self._take_first_step(instance_id, owner, state)
        finally:
            self._first_steps.discard(instance_id)

    async def _take_first_step(self, instance_id: str, owner: str, state: str) -> None:
        database = self.settings.catalog_database
        try:
            conn = await self._step_connection(owner, database, instance_id)
        except (StepFailed, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.info("event=first_step_deferred instance=%s error=%r", instance_id, exc)
            self._request_advance(instance_id)
            return
        first = FirstTransaction(self.parts, instance_id)
        outcome = FirstOutcome.NOTHING
        try:
            first.backend_pid = conn.get_server_pid()
            outcome = await run_first_step(
                conn, instance_id, uuid.UUID(self.owner_id), first, state
            )
            await self._after_first_step(instance_id, first, outcome)
        except (StepFailed, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.info("event=first_step_deferred instance=%s error=%r", instance_id, exc)
        finally:
            if first.task is not None:
                self._finished(first.task)
            self._spawn(self._release_step(owner, database, conn))
        if first.promoted and outcome is FirstOutcome.NOTHING and first.task is not None:
            self._start_task(first.task)  # its task row is ours: run it as any step
        elif outcome is FirstOutcome.NOTHING:
            self._request_advance(instance_id)

    async def _after_first_step(
        self, instance_id: str, first: FirstTransaction, outcome: FirstOutcome
    ) -> None:
        if outcome is FirstOutcome.PROMOTED:  # recorded; the instance waits for an advance
            await self.advance(instance_id)
            return
        if outcome is FirstOutcome.APPLIED:
            planned = first.planned
            self.counters.first_steps_total += first.task is not None
        elif outcome is FirstOutcome.PROMOTED_ADVANCED:
            planned = first.advance.planned[-1]
        else:
            return
        if planned is not None:
            await self._act_on_applied_in_step(instance_id, planned)

    async def _run_http(self, task: Task) -> bool:
        """Run an HTTP step and record its result (at-least-once: a request cannot commit
        with its record). False when it was abandoned (a RACE loser, a lost lease)."""
        request = asyncio.ensure_future(run_http_step(self.http, self._require_pool(), task))
        running = self._running.get((task.instance_id, task.node_id))
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
        await self._record_result(task, request.result(), "at-least-once")
        return True

    async def _release_step(self, owner: str, database: str, conn: asyncpg.Connection) -> None:
        try:
            await self.steps.release(owner, database, conn)
        finally:
            self.steps.slots.give()
            if self._claims_left:  # claim the next orphan now, not at the next poll
                self.wake()

    async def _record_result(self, task: Task, raw: str, delivery: str) -> None:
        await self._require_pool().execute(
            q("complete_step"), task.instance_id, task.node_id, uuid.UUID(task.token), raw, delivery
        )

    async def _fail(self, task: Task, error: str) -> None:
        pool = self._require_pool()
        try:
            recorded = await pool.fetchval(
                q("fail_step"), task.instance_id, task.node_id, uuid.UUID(task.token), error, None
            )
            if recorded:
                await self.advance(task.instance_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # the lease expires and the step runs again, to fail again
            self._warn(exc, "step", f"event=fail_record_error instance={task.instance_id} error=%r")

    async def _cancel_steps(self, instance_id: str, nodes: set[str]) -> None:
        """Cancel the SQL or HTTP still running for abandoned nodes (a RACE loser, a cancel)."""
        for (inst, node), running in list(self._running.items()):
            if inst == instance_id and node in nodes:
                await self._cancel_backend(running)

    async def _cancel_lost(self, lost_tokens: set[str]) -> None:
        """Steps whose lease could not be renewed (another engine has the task, or it was
        abandoned) are cancelled here."""
        for running in list(self._running.values()):
            if running.task.token in lost_tokens:
                await self._cancel_backend(running)

    async def _cancel_backend(self, running: RunningStep) -> None:
        if running.request is not None:
            running.request.cancel()
        if running.backend_pid is None:
            return
        task = running.task
        log.info(
            "event=cancel_step instance=%s node=%s pid=%s",
            task.instance_id,
            task.node_id,
            running.backend_pid,
        )
        try:  # a login role may always cancel its own backends
            conn = await self.steps.acquire(task.owner, task.database)
            try:
                async with conn.transaction():  # as the login role: a runner's own backend
                    await conn.execute(q("as_login_role"))
                    await conn.execute(q("cancel_backend"), running.backend_pid)
            finally:
                await self.steps.release(task.owner, task.database, conn)
        except (StepFailed, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("event=cancel_failed error=%r", exc)

    async def _verify_held(self, instance_id: str) -> None:
        """--verify-held-state: the held state must equal the stored one whenever the
        database would let it be used (same version, no change waiting)."""
        held = self.planning.snapshot(instance_id)
        if held is None:
            return
        try:
            row = await self._require_pool().fetchrow(q("held_state_check"), instance_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._warn(exc, "verify", "event=verify_held_failed error=%r")
            return
        if row is None or row["state"] is None or row["pending"]:
            return
        document = json.loads(row["state"])
        if document.get("version") != held.instance.get("version"):
            return
        found = differences(held, document)
        if found and not self.failed.done():
            log.error("event=held_state_mismatch instance=%s differences=%s", instance_id, found)
            self.failed.set_result(AssertionError(f"held state of {instance_id}: {found}"))
