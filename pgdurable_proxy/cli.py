"""`pgdurable`: start the relay (and, with no --upstream, an embedded PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from typing import Any

import uvloop

from dsl.statements import split_step
from engine.announced import FIRST_MARKER, relay_engine
from engine.engine import RELAYED_NOTICES, Engine
from engine.presence import WAKE_MARKER
from engine.settings import EngineSettings, ServerConfig, ServerValue
from pgdurable_proxy import logs
from pgdurable_proxy import pg_durable_settings as durable
from pgdurable_proxy.config import ConfigError, Settings, apply_server_config, parse_settings
from pgdurable_proxy.dsn import UpstreamDSN, parse_dsn
from pgdurable_proxy.intercept import Interceptor
from pgdurable_proxy.metrics import Metrics, process_registry
from pgdurable_proxy.preflight import StartupConflict, check_port_free, lock_data_dir
from pgdurable_proxy.server import ProxyServer, server_tls_context

log = logging.getLogger("pgdurable.cli")
BOOT_REPORT_SECONDS = 3.0  # how often pgdurable says it still waits for PostgreSQL
FD_LIMIT_IF_UNLIMITED = 1 << 20  # Linux's default fs.nr_open
FD_RESERVE = 64  # listening sockets, the engine's own connections, logs, HTTP steps


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pgdurable` console script."""
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"pgdurable: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:  # before anything is touched: a second pgdurable must not disturb the first
        data_dir_lock = lock_data_dir(settings.data_dir) if settings.embedded else None
        check_port_free(settings.host, settings.port)
        if settings.http_port is not None:
            check_port_free(settings.http_host, settings.http_port)
    except StartupConflict as exc:
        _fatal(settings, exc)
        return 2
    settings = fit_client_limit(settings, raise_fd_limit())
    try:
        return uvloop.run(serve(settings))
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:  # a bad pg_durable.* line in the server's configuration
        _fatal(settings, exc)
        return 2
    except Exception as exc:  # one line, not a traceback, for start-up failures
        _fatal(settings, exc)
        return 1
    finally:
        if data_dir_lock is not None:  # held until the embedded PostgreSQL has stopped
            data_dir_lock.close()


def _fatal(settings: Settings, exc: BaseException) -> None:
    """The one line pgdurable says before exiting on an error (a JSON object under
    --log-format json)."""
    if settings.log_format == "json":
        log.error("event=fatal error=%s", exc)
    else:
        print(f"pgdurable: error: {exc}", file=sys.stderr)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each client costs two descriptors);
    return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, FD_LIMIT_IF_UNLIMITED)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("event=fd_limit_not_raised soft=%s hard=%s reason=%s", soft, hard, exc)
    log.info("event=fd_limit soft=%s hard=%s", soft, hard)
    return FD_LIMIT_IF_UNLIMITED if soft == resource.RLIM_INFINITY else soft


def fit_client_limit(settings: Settings, fd_limit: int) -> Settings:
    """Lower --max-client-connections to what `fd_limit` descriptors can serve, with a warning.

    An admitted client holds two descriptors, a refused one one (up to as many again before
    refusals become immediate), and the engine needs connections of its own besides.
    """
    reserve = FD_RESERVE + settings.max_user_connections + settings.max_new_transaction_starts
    fitting = max(1, (fd_limit - reserve) // 3)
    if settings.max_client_connections <= fitting:
        return settings
    log.warning(
        "event=max_client_connections_lowered configured=%d effective=%d fd_limit=%d",
        settings.max_client_connections,
        fitting,
        fd_limit,
    )
    return dataclasses.replace(settings, max_client_connections=fitting)


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then shut down in order."""
    loop = asyncio.get_running_loop()
    cluster = None
    upstream = settings.upstream
    if upstream is None:
        from pgdurable_proxy.embedded import embedded_dsn, start_embedded

        cluster = await loop.run_in_executor(None, start_embedded, settings.data_dir)
        upstream = parse_dsn(embedded_dsn(cluster))
    try:
        await _serve_upstream(settings, upstream)
    finally:
        if cluster is not None:
            await loop.run_in_executor(None, cluster.stop)
    return 0


def engine_settings(settings: Settings, upstream: UpstreamDSN) -> EngineSettings:
    """The engine's view of the configuration: admin DSN and how to log in as an owner."""
    return EngineSettings(
        admin_dsn=upstream.admin_uri(),
        step_dsn=lambda user, password, database: upstream.with_user(
            user, password if user != upstream.user else upstream.password, database
        ),
        catalog_database=upstream.dbname,
        admin_user=upstream.user,
        runner_secret=settings.secret,
        max_user_connections=settings.max_user_connections,
        execution_acquire_timeout=settings.execution_acquire_timeout,
        # pg_durable's two pools less its listener, which is the presence connection here
        admin_pool_size=settings.max_management_connections + settings.max_duroxide_connections - 1,
        log_workflow_sql=settings.log_workflow_sql,
        max_result_bytes=settings.max_result_bytes,
        lease_seconds=settings.lease_seconds,
        step_idle_timeout=settings.step_idle_timeout,
        poll_interval=settings.poll_interval,
        enable_superuser_instances=settings.enable_superuser_instances,
        list_instances_max_limit=settings.list_instances_max_limit,
        min_loop_iteration_seconds=settings.min_loop_iteration_seconds,
        max_new_transaction_starts=settings.max_new_transaction_starts,
        new_transaction_start_timeout=settings.new_transaction_start_timeout,
        http=settings.http,
        verify_held_state=settings.verify_held_state,
        retention_days=settings.retention_days,
        retention_max_instances=settings.retention_max_instances,
        reconcile_interval=settings.reconcile_interval,
        split_statements=split_step,
    )


async def _serve_upstream(settings: Settings, upstream: UpstreamDSN) -> None:
    metrics = Metrics()
    registry = process_registry(metrics)
    stop = _stop_on_signals()
    configured = _ServerConfigured(settings, upstream)
    engine = Engine(engine_settings(settings, upstream), configured.server_config(), registry)
    await engine.start()
    admin = None
    if settings.http_port is not None:  # /healthz and /readyz answer while PostgreSQL is away
        from pgdurable_proxy.admin import start_admin
        from pgdurable_proxy.dashboard import Dashboard

        admin = await start_admin(
            settings.http_host,
            settings.http_port,
            registry,
            engine.read_catalog_gauges,
            engine.readiness,
            Dashboard(upstream.with_user, settings.http_host).mount,
        )
    try:
        if await _booted(engine, upstream, stop, settings.log_format == "json"):
            await _relay(configured, engine, metrics, stop)
    finally:
        await engine.stop()
        if admin is not None:
            await admin.cleanup()
    if engine.failed.done():
        raise engine.failed.result()


async def _booted(
    engine: Engine, upstream: UpstreamDSN, stop: asyncio.Event, json_lines: bool
) -> bool:
    """Wait until the engine has installed the catalog (True), saying on stderr every few
    seconds why not yet (a warning log line under --log-format json); False when asked to
    stop or the engine failed first."""
    started = asyncio.ensure_future(engine.started())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            waiting: set[asyncio.Future[Any]] = {started, stopped, engine.failed}
            await asyncio.wait(waiting, timeout=BOOT_REPORT_SECONDS, return_when="FIRST_COMPLETED")
            if started.done():
                return True
            if stopped.done() or engine.failed.done():
                return False
            reason = engine.boot_error or "installing the df catalog"
            if json_lines:
                address = _address(upstream)
                log.warning("event=waiting_for_postgresql address=%s reason=%s", address, reason)
                continue
            print(
                f"pgdurable: waiting for PostgreSQL at {_address(upstream)}: {reason}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        started.cancel()
        stopped.cancel()


async def _relay(
    configured: _ServerConfigured, engine: Engine, metrics: Metrics, stop: asyncio.Event
) -> None:
    """Serve clients until SIGTERM/SIGINT or the engine fails for good (the engine has read
    the server's configuration by now: `configured` holds the settings in force)."""
    settings, upstream = configured.settings, configured.upstream
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = server_tls_context(str(settings.tls_cert), str(settings.tls_key))
    server = ProxyServer(
        upstream,
        Interceptor(metrics, settings_relation=durable.settings_relation(Settings(None))),
        metrics,
        tls,
        wake=engine.wake,
        relayed_notice=engine.relayed_notice,
        notice_markers=RELAYED_NOTICES,
        authentication_timeout=settings.authentication_timeout,
        max_client_connections=settings.max_client_connections,
        startup_parameters=configured.startup_parameters(),
        wake_notice=WAKE_MARKER,
        first_notice=FIRST_MARKER,
        relay_engine=relay_engine(engine.owner_id),
    )
    port = await server.start(settings.host, settings.port)
    _announce(settings, upstream, port)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {stopped, engine.failed}
    await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
    stopped.cancel()
    log.info("event=shutting_down sessions=%d", len(server.sessions))
    await server.shutdown(settings.shutdown_timeout)


def _address(upstream: UpstreamDSN) -> str:
    if upstream.is_unix_socket:
        return f"{upstream.host}/.s.PGSQL.{upstream.port}"
    return f"{upstream.host}:{upstream.port}"


def _stop_on_signals() -> asyncio.Event:
    """An event SIGTERM and SIGINT set."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class _ServerConfigured:
    """Applies the server's `pg_durable.*` lines when the engine has read them (before it
    installs the catalog): the engine runs with the result, and so do the relay's sessions,
    which start only then."""

    def __init__(self, settings: Settings, upstream: UpstreamDSN) -> None:
        self.settings = settings
        self.upstream = upstream

    def server_config(self) -> ServerConfig:
        return ServerConfig(tuple(durable.BY_NAME), self.apply)

    def startup_parameters(self) -> bytes:
        return durable.startup_parameters(durable.effective_values(self.settings, self.upstream))

    def apply(self, found: tuple[ServerValue, ...]) -> EngineSettings:
        configured = apply_server_config(self.settings, self.upstream, found)
        for name, reason in configured.unused:
            log.warning("event=server_setting_unused name=%s reason=%r", name, reason)
        self.settings = configured.settings
        if self.settings.max_management_connections == 1:  # as pg_durable's worker warns
            log.warning(
                "event=few_engine_connections max_management_connections=1 "
                "hint='advances wait for each other; 6 is the default'"
            )
        return engine_settings(self.settings, self.upstream)


def _announce(settings: Settings, upstream: UpstreamDSN, port: int) -> None:
    user = upstream.user if settings.embedded else "<user>"
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    uri = f"postgresql://{user}@{host}:{port}/{upstream.dbname}"
    print(f"pgdurable ready on {settings.host}:{port}", flush=True)
    print(f'connect with: psql "{uri}"', flush=True)
    if settings.http_port is not None:
        web = settings.http_host if settings.http_host not in ("0.0.0.0", "::") else "127.0.0.1"
        web = f"[{web}]" if ":" in web else web
        print(f"dashboard: http://{web}:{settings.http_port}/", flush=True)
