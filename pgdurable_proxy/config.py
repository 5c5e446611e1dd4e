"""Settings: command-line flags over PGDURABLE_* environment variables, frozen once parsed."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from pgdurable_proxy.dsn import DSNError, UpstreamDSN, parse_dsn

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """Bad configuration; the message is the one-line reason printed before exiting."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to start; passed down, never global."""

    upstream: UpstreamDSN | None  # None: start the embedded PostgreSQL
    host: str = "127.0.0.1"
    port: int = 6432
    data_dir: Path = Path(".")
    log_level: str = "warning"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    http_port: int | None = None
    shutdown_timeout: float = 30.0
    enable_superuser_instances: bool = False
    max_user_connections: int = 10
    poll_interval: float = 1.0
    lease_seconds: float = 30.0
    min_loop_iteration_seconds: float = 1.0

    @property
    def embedded(self) -> bool:
        """True when pgdurable runs its own PostgreSQL."""
        return self.upstream is None


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data unless --data-dir says otherwise."""
    import platformdirs

    return Path(platformdirs.user_data_dir("pgdurable"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = _Parser(prog="pgdurable", description="Durable SQL workflows for any PostgreSQL.")
    p.add_argument(
        "--upstream",
        default=env.get("PGDURABLE_UPSTREAM"),
        help="DSN of the PostgreSQL to front (default: start an embedded one)",
    )
    p.add_argument("--host", default=env.get("PGDURABLE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env.get("PGDURABLE_PORT", "6432")))
    p.add_argument(
        "--data-dir",
        type=Path,
        default=env.get("PGDURABLE_DATA_DIR"),
        help="data directory of the embedded PostgreSQL",
    )
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, default=env.get("PGDURABLE_LOG_LEVEL", "warning")
    )
    p.add_argument("--tls-cert", type=Path, default=env.get("PGDURABLE_TLS_CERT"))
    p.add_argument("--tls-key", type=Path, default=env.get("PGDURABLE_TLS_KEY"))
    p.add_argument(
        "--http-port",
        type=int,
        default=env.get("PGDURABLE_HTTP_PORT"),
        help="serve /healthz and /metrics on this port (default: off)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=float(env.get("PGDURABLE_SHUTDOWN_TIMEOUT", "30")),
        help="seconds sessions may take to finish after SIGTERM",
    )
    p.add_argument(
        "--enable-superuser-instances",
        action="store_true",
        default=env.get("PGDURABLE_ENABLE_SUPERUSER_INSTANCES", "") in ("1", "on", "true"),
        help="let superusers own workflows (pg_durable.enable_superuser_instances)",
    )
    p.add_argument(
        "--max-user-connections",
        type=int,
        default=int(env.get("PGDURABLE_MAX_USER_CONNECTIONS", "10")),
        help="global cap on concurrently running SQL steps",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=float(env.get("PGDURABLE_POLL_INTERVAL", "1.0")),
        help="seconds between safety-net polls for due work",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=float(env.get("PGDURABLE_LEASE_SECONDS", "30")),
        help="how long a claimed step stays ours without renewal",
    )
    p.add_argument(
        "--min-loop-iteration-seconds",
        type=float,
        default=float(env.get("PGDURABLE_MIN_LOOP_ITERATION_SECONDS", "1.0")),
        help="pad each loop iteration to at least this long (pg_durable: 1 s)",
    )
    return p


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Parse flags (falling back to PGDURABLE_* variables) into Settings."""
    env = os.environ if env is None else env
    try:
        args = _parser(env).parse_args(list(argv))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        upstream = parse_dsn(args.upstream) if args.upstream else None
    except DSNError as exc:
        raise ConfigError(f"bad upstream DSN: {exc}") from None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise ConfigError(f"no such file: {path}")
    if not 0 <= args.port < 65536:
        raise ConfigError(f"invalid port: {args.port}")
    return Settings(
        upstream=upstream,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir or default_data_dir(),
        log_level=args.log_level,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        http_port=int(args.http_port) if args.http_port is not None else None,
        shutdown_timeout=args.shutdown_timeout,
        enable_superuser_instances=args.enable_superuser_instances,
        max_user_connections=args.max_user_connections,
        poll_interval=args.poll_interval,
        lease_seconds=args.lease_seconds,
        min_loop_iteration_seconds=args.min_loop_iteration_seconds,
    )
