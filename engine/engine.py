"""The engine: puts its parts together, installs the catalog, and starts and stops them.

* scheduler.py: when to work (wake-ups, polls, the advance queue, lease renewal);
* advance.py: how an instance advances (the ordinary, in-step and first-step paths);
* dispatch.py: running leaf tasks, and the step connection passed from a step to the next;
* presence.py: wake-ups and the heartbeat, on a connection of their own;
* cancel.py: cancelling running steps;
* retention.py: deleting finished instances past their retention;
* executors/: how a step runs (SQL, HTTP), new-transaction starts;
* connections/: step connections, their slots, runner roles, outages;
* planner/: the pure planner; store.py: the catalog calls.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import cast

import asyncpg
from prometheus_client import CollectorRegistry

from engine.advance import AdvanceParts, Advancer
from engine.announced import FIRST_MARKER, read_announced
from engine.cancel import Canceller
from engine.catalog import catalog_version, migrate
from engine.connections.pool import StepConnections
from engine.connections.runners import Runners
from engine.dispatch import TaskRunner
from engine.executors.http import HttpClient
from engine.executors.new_transaction import NOTICE_MARKER as NEW_START_MARKER
from engine.executors.new_transaction import NewStartRequest, NewTransactionStarts
from engine.metrics import EngineMetrics
from engine.planner.held import Planning
from engine.planner.plan import TaskLease
from engine.presence import WAKE_MARKER, Presence, heartbeat_interval
from engine.retention import Retention
from engine.running import Background, Running
from engine.scheduler import AdvanceQueue, Scheduler, SchedulerParts
from engine.settings import EngineSettings, ServerConfig
from engine.signals import SIGNAL_MARKER, SignalRequest
from engine.store import Store

log = logging.getLogger("pgdurable.engine")
# The engine's queries look rows up by key: never by a sequential scan planned while a table
# was nearly empty (see the README's design section), and never JIT-compiled.
ENGINE_SESSION = {"enable_seqscan": "off", "jit": "off"}
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
# The NOTICE messages by which a backend asks the engine for something (relayed_notice).
RELAYED_NOTICES = frozenset({NEW_START_MARKER, SIGNAL_MARKER, WAKE_MARKER, FIRST_MARKER})
READINESS_TIMEOUT = 2.0  # seconds /readyz waits for PostgreSQL's answer


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The admin pool runs only the engine's own queries: no session state to reset."""


class Engine:
    """One engine per pgdurable process; several processes may share a database."""

    def __init__(
        self,
        settings: EngineSettings,
        server_config: ServerConfig | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`registry`: where the engine's metrics go (the process's /metrics registry)."""
        self.owner_id = str(uuid.uuid4())
        self.metrics = EngineMetrics(registry)
        self.counters = self.metrics.counters
        self.background = Background()
        self.outage = self.background.outage
        self.pool: asyncpg.Pool | None = None
        self.presence = Presence(
            settings.admin_dsn, uuid.UUID(self.owner_id), settings.lease_seconds, self.wake
        )
        self._server_config = server_config
        self._build(settings)
        self._loops: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self.boot_error: str | None = "not connected yet"  # why PostgreSQL is not in reach
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.version = 0

    def _build(self, settings: EngineSettings) -> None:
        """The parts that follow from the settings (built again, before any of them ran, when
        the server's configuration changes them)."""
        self.settings = settings
        self.lease = TaskLease(self.owner_id, settings.lease_seconds)
        self.planning = Planning(
            self.lease, settings.enable_superuser_instances, settings.min_loop_iteration_seconds
        )
        runners = None
        if settings.runner_secret is not None:
            runners = Runners(settings.runner_secret, self._require_pool)
        self.steps = StepConnections(settings, runners)
        slots = self.steps.slots
        self.metrics.watch_slots(lambda: (slots.size - slots.free, slots.waiting))
        self.http = HttpClient(settings.http, on_outcome=self.metrics.http_outcome)
        self._assemble()
        self.new_starts = NewTransactionStarts(
            self.store,
            self.steps.connect,
            settings.catalog_database,
            settings.max_new_transaction_starts,
            settings.new_transaction_start_timeout,
        )

    def _assemble(self) -> None:
        settings = self.settings
        store = Store(
            self._require_pool, self.owner_id, settings.lease_seconds, settings.catalog_database
        )
        self.store = store
        self.queue = AdvanceQueue(store)
        self.running = Running(self.planning)
        canceller = Canceller(self.running, self.steps)
        self.tasks = TaskRunner(
            settings,
            store,
            self.steps,
            self.http,
            self.running,
            self.metrics,
            self.queue,
            self.background,
        )
        parts = AdvanceParts(
            self.tasks, canceller, self.running, self.metrics, self.queue, self.background
        )
        verify = self._held_state_mismatch if settings.verify_held_state else None
        self.advancer = Advancer(store, self.planning, parts, verify)
        self.tasks.advancer = self.advancer
        self.scheduler = Scheduler(
            settings,
            store,
            self.queue,
            SchedulerParts(
                self.steps.slots,
                self.advancer,
                self.tasks,
                canceller,
                self.running,
                self.background,
                self.presence.ensure,
                self.counters,
            ),
        )
        self.retention = Retention(settings, store, self.background, self.scheduler.stop)

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
        while not self.scheduler.stop.is_set():
            try:
                await self._boot()
                self.boot_error = None
                break
            except DB_ERRORS as exc:
                self.boot_error = str(exc) or repr(exc)
                # at info: pgdurable's stderr says so every few seconds (cli._booted)
                log.info("event=engine_boot_retry error=%r delay=%.1f", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._ready.set()
        self.wake()
        scheduler = self.scheduler
        loops = [
            asyncio.create_task(scheduler.schedule(), name="pgdurable-scheduler"),
            asyncio.create_task(scheduler.advance(), name="pgdurable-advancer"),
            asyncio.create_task(scheduler.keep_leases(), name="pgdurable-leases"),
            asyncio.create_task(self._keep_beating(), name="pgdurable-heartbeat"),
        ]
        if self.retention.enabled:
            loops.append(asyncio.create_task(self.retention.run(), name="pgdurable-retention"))
        try:
            await asyncio.gather(*loops)
        finally:  # the loops end before stop() closes the pools they use
            for loop_task in loops:
                loop_task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _boot(self) -> None:
        conn = await asyncpg.connect(self.settings.admin_dsn)
        try:
            await self._configure(conn)
            self.version = await migrate(conn)
            await self.presence.ensure()  # this engine's heartbeat row, its predecessor's gone
            await self.store.publish(conn, self._published(), self.version)
            await self._log_start(conn)
        finally:
            await conn.close()
        self.pool = await asyncpg.create_pool(
            self.settings.admin_dsn,
            min_size=0,  # no floor to restore (with a traceback) while PostgreSQL is away
            max_size=self.settings.admin_pool_size,
            reset=_keep_session,
            server_settings=ENGINE_SESSION,
        )

    async def _configure(self, conn: asyncpg.Connection) -> None:
        """Once, before anything runs: settings the server's configuration gives."""
        config = self._server_config
        if config is None:
            return
        settings = config.apply(await self.store.server_values(conn, config.names))
        self._server_config = None
        if settings != self.settings:
            self._build(settings)
            self.presence.lease_seconds = settings.lease_seconds

    async def _log_start(self, conn: asyncpg.Connection) -> None:
        """At info: this engine started; and, when it finds instances unfinished (a restart,
        a crash), how many it resumes, and how many of their steps were leased (to an engine
        gone after a crash: taken over once the lease expires, event=lease_taken_over)."""
        instances, leased = await self.store.in_flight(conn)
        log.info("event=engine_started engine=%s catalog_version=%d", self.owner_id, self.version)
        if instances:
            log.info("event=recovery instances=%d leased_steps=%d", instances, leased)

    def _published(self) -> dict[str, str]:
        """The settings df.* reads from df._settings."""
        s = self.settings
        return {
            "enable_superuser_instances": "on" if s.enable_superuser_instances else "off",
            "http_enabled": "on" if s.http.enabled else "off",
            "list_instances_max_limit": str(s.list_instances_max_limit),
            "max_user_connections": str(s.max_user_connections),
            "new_transaction_start_timeout": str(s.new_transaction_start_timeout),
            "runner_roles": "on" if s.runner_secret is not None else "off",
        }

    async def _keep_beating(self) -> None:
        """The heartbeat: every few seconds on the presence connection (pg_durable: ~5 s)."""
        interval = heartbeat_interval(self.settings.lease_seconds)
        while not self.scheduler.stop.is_set():
            await asyncio.sleep(interval)
            try:
                await self.presence.beat()
            except DB_ERRORS as exc:
                self.background.warn(exc, "heartbeat", "event=heartbeat_failed error=%r")

    async def stop(self) -> None:
        """Stop the loops; in-flight steps are abandoned (their leases expire)."""
        self.scheduler.stop.set()
        self.queue.wake()
        tasks = [*self._loops, *self.background.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.presence.close()
        await self.metrics.catalog.close()
        await self.steps.close()
        await self.http.close()
        if self.pool is not None:
            self.pool.terminate()

    async def readiness(self) -> dict[str, str]:
        """Each readiness check and its state: "ok", or what is wrong (/readyz)."""
        return {
            "postgres": await self._postgres_state(),
            "catalog": self._catalog_state(),
            "engine": self._engine_state(),
            "listener": "ok" if self.presence.listening else "not connected to PostgreSQL",
        }

    async def _postgres_state(self) -> str:
        if self.pool is None:
            return f"not reachable: {self.boot_error}"
        try:
            await self.pool.fetchval("SELECT 1", timeout=READINESS_TIMEOUT)
        except (*DB_ERRORS, TimeoutError) as exc:
            return f"not reachable: {str(exc) or repr(exc)}"
        return "ok"

    def _catalog_state(self) -> str:
        expected = catalog_version()
        if self.version == expected:
            return "ok"
        if self.version == 0:
            return "not installed yet"
        return f"at version {self.version}, expected {expected}"

    def _engine_state(self) -> str:
        if self.failed.done():
            return f"failed: {self.failed.result()!r}"
        if not self._ready.is_set():
            return "starting"
        if not self._loops or self._loops[0].done():
            return "stopped"
        return "ok"

    async def read_catalog_gauges(self) -> None:
        """Read the catalog's gauges for /metrics (at most once a second)."""
        await self.metrics.catalog.refresh(self.pool)

    def wake(self) -> None:
        """Look for work now (the relay calls it once a session it serves has ended a
        transaction that gave the engine work: such sessions notify no df_wake,
        df._wake_engines)."""
        self.queue.wake()

    def _require_pool(self) -> asyncpg.Pool:
        assert self.pool is not None, "engine not started"
        return self.pool

    def _held_state_mismatch(self, instance_id: str, found: list[str]) -> None:
        """--verify-held-state found the held state wrong: the engine fails (tests)."""
        if not self.failed.done():
            log.error("event=held_state_mismatch instance=%s differences=%s", instance_id, found)
            self.failed.set_result(AssertionError(f"held state of {instance_id}: {found}"))

    # -- requests from the proxy ----------------------------------------------------------------
    def relayed_notice(self, login_role: str, message: str, detail: str) -> None:
        """A NOTICE of RELAYED_NOTICES that a session of `login_role` raised."""
        if message == SIGNAL_MARKER:
            self.signal(login_role, detail)
        elif message == NEW_START_MARKER:
            self.start_new(login_role, detail)
        elif message == FIRST_MARKER:
            self.first_announced(login_role, detail)

    def first_announced(self, login_role: str, detail: str) -> None:
        """A df.start through a session of `login_role` announced a new instance (its
        transaction has ended): take its first step (engine/announced.py)."""
        try:
            announced = read_announced(self.owner_id, login_role, detail)
        except (ValueError, KeyError, TypeError):
            announced = None
        if announced is None or self.pool is None:
            log.warning("event=first_notice_ignored role=%s", login_role)
            self.wake()  # a pass finds the instance, if there is one
            return
        self.scheduler.announced(announced)

    def signal(self, login_role: str, detail: str) -> None:
        """A df.signal asked through a session of `login_role` (engine/signals.py)."""
        try:
            request = SignalRequest.from_detail(detail)
        except (ValueError, KeyError, TypeError):
            log.warning("event=signal_request_unreadable role=%s", login_role)
            return
        self.background.spawn(self._signal(login_role, request))

    async def _signal(self, login_role: str, request: SignalRequest) -> None:
        if self.pool is None:  # not booted: the caller stores the signal itself
            log.warning("event=signal_before_ready request=%s", request.request)
            return
        try:
            if await self.store.record_signal(login_role, request):
                self.wake()
        except DB_ERRORS as exc:  # the caller stores the signal itself after its wait
            log.warning("event=signal_request_error request=%s error=%r", request.request, exc)

    def start_new(self, login_role: str, detail: str) -> None:
        """A df.start(..., transaction_mode => 'new') asked through a session of `login_role`."""
        try:
            request = NewStartRequest.from_detail(detail)
        except (ValueError, KeyError, TypeError):
            log.warning("event=new_start_unreadable role=%s", login_role)
            return
        self.background.spawn(self._start_new(login_role, request))

    async def _start_new(self, login_role: str, request: NewStartRequest) -> None:
        if self.pool is None:  # not booted: the caller's df.start times out with a clear text
            log.warning("event=new_start_before_ready request=%s", request.request)
            return
        try:
            if await self.new_starts.handle(login_role, request):
                self.wake()
        except DB_ERRORS as exc:
            log.warning("event=new_start_error request=%s error=%r", request.request, exc)
