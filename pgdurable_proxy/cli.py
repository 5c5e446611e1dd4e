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

from engine.engine import Engine
from engine.settings import EngineSettings
from pgdurable_proxy import logs
from pgdurable_proxy.config import ConfigError, Settings, parse_settings
from pgdurable_proxy.dsn import UpstreamDSN, parse_dsn
from pgdurable_proxy.intercept import Interceptor
from pgdurable_proxy.metrics import Metrics, render_counters
from pgdurable_proxy.preflight import StartupConflict, check_port_free, lock_data_dir
from pgdurable_proxy.server import ProxyServer, server_tls_context

log = logging.getLogger("pgdurable.cli")
ENGINE_BOOT_WAIT = 15.0
FD_LIMIT_IF_UNLIMITED = 1 << 20  # Linux's default fs.nr_open
FD_RESERVE = 64  # listening sockets, the engine's own connections, logs, HTTP steps


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pgdurable` console script."""
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"pgdurable: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:  # before anything is touched: a second pgdurable must not disturb the first
        data_dir_lock = lock_data_dir(settings.data_dir) if settings.embedded else None
        for port in (settings.port, settings.http_port):
            if port is not None:
                check_port_free(settings.host, port)
    except StartupConflict as exc:
        print(f"pgdurable: error: {exc}", file=sys.stderr)
        return 2
    settings = fit_client_limit(settings, raise_fd_limit())
    try:
        return uvloop.run(serve(settings))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one line, not a traceback, for start-up failures
        print(f"pgdurable: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if data_dir_lock is not None:  # held until the embedded PostgreSQL has stopped
            data_dir_lock.close()


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
        log_workflow_sql=settings.log_workflow_sql,
        max_result_bytes=settings.max_result_bytes,
        lease_seconds=settings.lease_seconds,
        step_idle_timeout=settings.step_idle_timeout,
        poll_interval=settings.poll_interval,
        enable_superuser_instances=settings.enable_superuser_instances,
        min_loop_iteration_seconds=settings.min_loop_iteration_seconds,
        max_new_transaction_starts=settings.max_new_transaction_starts,
        new_transaction_start_timeout=settings.new_transaction_start_timeout,
        http=settings.http,
        verify_held_state=settings.verify_held_state,
    )


async def _serve_upstream(settings: Settings, upstream: UpstreamDSN) -> None:
    metrics = Metrics()
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = server_tls_context(str(settings.tls_cert), str(settings.tls_key))
    engine = Engine(engine_settings(settings, upstream))
    await engine.start()
    try:  # normally the catalog is in place before clients come; never wait forever for it
        await asyncio.wait_for(asyncio.shield(engine.started()), ENGINE_BOOT_WAIT)
    except TimeoutError:
        log.warning("event=engine_not_ready_yet waited=%ss", ENGINE_BOOT_WAIT)
    server = ProxyServer(
        upstream,
        Interceptor(metrics),
        metrics,
        tls,
        wake=engine.started_through_proxy,
        start_new=engine.start_new,
        authentication_timeout=settings.authentication_timeout,
        max_client_connections=settings.max_client_connections,
    )
    port = await server.start(settings.host, settings.port)
    admin = None
    if settings.http_port is not None:
        from pgdurable_proxy.admin import start_admin

        admin = await start_admin(
            settings.host, settings.http_port, metrics, lambda: render_counters(engine.counters)
        )
    _announce(settings, upstream, port)
    failure = await _wait_for_signal_or(engine.failed)
    log.warning("event=shutting_down sessions=%d", len(server.sessions))
    await server.shutdown(settings.shutdown_timeout)
    await engine.stop()
    if admin is not None:
        await admin.cleanup()
    if failure is not None:
        raise failure


def _announce(settings: Settings, upstream: UpstreamDSN, port: int) -> None:
    user = upstream.user if settings.embedded else "<user>"
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    uri = f"postgresql://{user}@{host}:{port}/{upstream.dbname}"
    print(f"pgdurable ready on {settings.host}:{port}", flush=True)
    print(f'connect with: psql "{uri}"', flush=True)


async def _wait_for_signal_or(failed: asyncio.Future[BaseException]) -> BaseException | None:
    """Wait for SIGTERM/SIGINT (None) or for the engine to fail for good (its error)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {stopped, failed}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    return failed.result() if failed.done() else None
