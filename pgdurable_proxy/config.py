"""Settings: command-line flags over PGDURABLE_* environment variables, frozen once parsed."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from engine.executors.ssrf import AllowListError, parse_allow_list
from engine.settings import DEFAULT_MAX_RESULT_BYTES, MIB, HttpSettings, ServerValue
from pgdurable_proxy import pg_durable_settings as durable
from pgdurable_proxy.dsn import DSNError, UpstreamDSN, parse_dsn
from pgdurable_proxy.logs import LOG_FORMATS

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
    log_format: str = "text"  # or "json": one object per line (logs.py)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    http_port: int | None = None
    http_host: str = "127.0.0.1"  # the admin port (dashboard): loopback unless asked
    shutdown_timeout: float = 30.0
    enable_superuser_instances: bool = False
    max_user_connections: int = 10
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    poll_interval: float = 1.0
    lease_seconds: float = 30.0
    step_idle_timeout: float = 4.0
    min_loop_iteration_seconds: float = 1.0
    max_new_transaction_starts: int = 2
    new_transaction_start_timeout: float = 5.0
    secret: bytes | None = field(default=None, repr=False)  # never printed
    http: HttpSettings = field(default_factory=HttpSettings)
    verify_held_state: bool = False
    authentication_timeout: float = 60.0
    max_client_connections: int = 1000
    # pg_durable's settings that had no flag yet (pg_durable_settings.py maps them all)
    list_instances_max_limit: int = 1000
    execution_acquire_timeout: int = 30  # seconds an SQL step waits for a step slot
    # the engine's own connections: pg_durable's management and duroxide pools, together
    max_management_connections: int = 6
    max_duroxide_connections: int = 10
    log_workflow_sql: bool = False  # log each step's substituted SQL (info)
    http_disable: bool = False  # no outbound HTTP: pg_durable's build without HTTP
    retention_days: int = 30
    reconcile_interval: int = 3600  # seconds; 0: no retention passes
    retention_max_instances: int = 10_000  # finished instances kept (pg_durable: fixed); 0: no cap
    # the fields set by a flag or a PGDURABLE_* variable (a pg_durable.* line does not win)
    explicit: frozenset[str] = frozenset()

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


_TRUE = ("1", "on", "true")


def _parser(
    env: Mapping[str, str], from_env: set[str] | None = None, *, given_only: bool = False
) -> argparse.ArgumentParser:
    """The flags; `from_env` collects the fields a PGDURABLE_* variable sets, and with
    `given_only` a flag that is absent leaves no attribute (to tell which were given)."""
    p = _Parser(prog="pgdurable", description="Durable SQL workflows for any PostgreSQL.")

    def option(flag: str, default: object = None, help: str | None = None, **kw: Any) -> None:
        """A flag whose default is PGDURABLE_<FLAG> when that is set (argparse converts it)."""
        variable = "PGDURABLE_" + flag.lstrip("-").replace("-", "_").upper()
        if variable in env:
            value = env[variable]
            default = value in _TRUE if kw.get("action") == "store_true" else value
            if from_env is not None:
                from_env.add(flag.lstrip("-").replace("-", "_"))
        p.add_argument(flag, default=argparse.SUPPRESS if given_only else default, help=help, **kw)

    option("--upstream", help="DSN of the PostgreSQL to front (default: start an embedded one)")
    option("--host", "127.0.0.1")
    option("--port", 6432, type=int)
    option("--data-dir", type=Path, help="data directory of the embedded PostgreSQL")
    option("--log-level", "warning", choices=LOG_LEVELS)
    option(
        "--log-format",
        "text",
        choices=LOG_FORMATS,
        help="stderr lines as key=value text, or one JSON object per line for log shippers",
    )
    option("--tls-cert", type=Path)
    option("--tls-key", type=Path)
    option(
        "--http-port",
        type=int,
        help="serve /healthz, /readyz, /metrics and the dashboard on this port (default: off)",
    )
    option("--http-host", "127.0.0.1", help="address the --http-port listens on")
    option(
        "--shutdown-timeout",
        30.0,
        type=float,
        help="seconds sessions may take to finish after SIGTERM",
    )
    option(
        "--authentication-timeout",
        60.0,
        type=float,
        help="seconds a client may take from connecting to the end of its login",
    )
    option(
        "--max-client-connections",
        1000,
        type=int,
        help="client connections at once; more get FATAL 53300 (too many clients)",
    )
    option(
        "--enable-superuser-instances",
        False,
        action="store_true",
        help="let superusers own workflows (pg_durable.enable_superuser_instances)",
    )
    option(
        "--max-user-connections", 10, type=int, help="global cap on concurrently running SQL steps"
    )
    option(
        "--max-result-bytes",
        DEFAULT_MAX_RESULT_BYTES,
        type=int,
        help="cap on an SQL step's result (its JSON document); a step over it fails",
    )
    option("--poll-interval", 1.0, type=float, help="seconds between safety-net polls for due work")
    option(
        "--lease-seconds",
        30.0,
        type=float,
        help="how long a claimed step stays ours without renewal",
    )
    option(
        "--step-idle-timeout",
        4.0,
        type=float,
        help="close a pooled step connection unused for this many seconds",
    )
    option(
        "--min-loop-iteration-seconds",
        1.0,
        type=float,
        help="pad each loop iteration to at least this long (pg_durable: 1 s)",
    )
    option(
        "--max-new-transaction-starts",
        2,
        type=int,
        help="concurrent df.start(..., transaction_mode => 'new') sessions",
    )
    option(
        "--new-transaction-start-timeout",
        5.0,
        type=float,
        help="seconds such a start waits for one of those sessions",
    )
    option(
        "--secret-file",
        type=Path,
        help="file holding the secret runner-role passwords derive from (or PGDURABLE_SECRET)",
    )
    option(
        "--verify-held-state",
        False,
        action="store_true",
        help="check the state held in memory against the database after each use, and stop "
        "on any difference (for tests; costs a query per step)",
    )
    _http_options(option)
    _pg_durable_options(option)
    return p


def _pg_durable_options(option: Any) -> None:
    """Flags for pg_durable settings that had none (pg_durable_settings.py maps them all)."""
    option("--list-instances-max-limit", 1000, type=int, help="most rows df.list_instances returns")
    option(
        "--execution-acquire-timeout",
        30,
        type=int,
        help="seconds an SQL step waits for a step slot (--max-user-connections) before it "
        "fails (1-3600)",
    )
    option(
        "--max-management-connections",
        6,
        type=int,
        help="the engine's connections for loading and advancing instances, added to "
        "--max-duroxide-connections (1-1000; 1 is allowed with a warning)",
    )
    option(
        "--max-duroxide-connections",
        10,
        type=int,
        help="the engine's connections for scheduler passes and claims, one of them its "
        "listener (2-1000)",
    )
    option(
        "--log-workflow-sql",
        False,
        action="store_true",
        help="log each SQL step's substituted statement (level info); off: never logged",
    )
    option(
        "--http-disable",
        False,
        action="store_true",
        help="refuse df.http()/df.http_multipart() and fail HTTP steps, as pg_durable's "
        "build without HTTP",
    )
    option("--retention-days", 30, type=int, help="days a finished instance is kept")
    option("--reconcile-interval", 3600, type=int, help="seconds between retention passes")
    option(
        "--retention-max-instances",
        10_000,
        type=int,
        help="finished instances kept at most, the newest (pg_durable: a fixed 10000); 0: no cap",
    )


MIN_SECRET_BYTES = 16


def _secret(path: Path | None, env: Mapping[str, str]) -> bytes | None:
    """The runner secret: --secret-file's contents, else PGDURABLE_SECRET, else None."""
    if path is not None:
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --secret-file: {exc.strerror}: {path}") from None
    elif env.get("PGDURABLE_SECRET"):
        secret = env["PGDURABLE_SECRET"].encode().strip()
    else:
        return None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"the runner secret must be at least {MIN_SECRET_BYTES} bytes long")
    return secret


def _http_options(option: Any) -> None:
    option(
        "--http-allow",
        "",
        help="comma-separated IPs, CIDRs or hostnames (each optionally :port) that HTTP "
        "steps may reach although they are not public addresses",
    )
    option("--http-max-timeout", 300.0, type=float, help="cap on an HTTP step's timeout (s)")
    option("--http-max-request-bytes", 10 * MIB, type=int, help="cap on an HTTP request body")
    option("--http-max-response-bytes", 10 * MIB, type=int, help="cap on an HTTP response body")
    option("--http-max-redirects", 5, type=int, help="redirects an HTTP step follows")


def _http_settings(args: argparse.Namespace) -> HttpSettings:
    try:
        allow = parse_allow_list(args.http_allow)
    except AllowListError as exc:
        raise ConfigError(str(exc)) from None
    for flag in ("max_timeout", "max_request_bytes", "max_response_bytes"):
        if getattr(args, f"http_{flag}") <= 0:
            raise ConfigError(f"--http-{flag.replace('_', '-')} must be positive")
    if args.http_max_redirects < 0:
        raise ConfigError("--http-max-redirects cannot be negative")
    return HttpSettings(
        allow=allow,
        max_timeout=args.http_max_timeout,
        max_request_bytes=args.http_max_request_bytes,
        max_response_bytes=args.http_max_response_bytes,
        max_redirects=args.http_max_redirects,
        enabled=not args.http_disable,
    )


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Parse flags (falling back to PGDURABLE_* variables) into Settings."""
    env = os.environ if env is None else env
    from_env: set[str] = set()
    args = _parser(env, from_env).parse_args(list(argv))  # errors arrive as ConfigError
    given = vars(_parser({}, given_only=True).parse_args(list(argv)))
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
    if args.authentication_timeout <= 0:
        raise ConfigError("--authentication-timeout must be positive")
    if args.max_client_connections < 1:
        raise ConfigError("--max-client-connections must be at least 1")
    if args.max_result_bytes <= 0:
        raise ConfigError("--max-result-bytes must be positive")
    _check_pg_durable_ranges(args)
    if args.step_idle_timeout <= 0:
        raise ConfigError("--step-idle-timeout must be positive")
    if args.retention_max_instances < 0:
        raise ConfigError("--retention-max-instances cannot be negative (0: no cap)")
    return Settings(
        upstream=upstream,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir or default_data_dir(),
        log_level=args.log_level,
        log_format=args.log_format,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        http_port=int(args.http_port) if args.http_port is not None else None,
        http_host=args.http_host,
        shutdown_timeout=args.shutdown_timeout,
        enable_superuser_instances=args.enable_superuser_instances,
        max_user_connections=args.max_user_connections,
        max_result_bytes=args.max_result_bytes,
        poll_interval=args.poll_interval,
        lease_seconds=args.lease_seconds,
        step_idle_timeout=args.step_idle_timeout,
        min_loop_iteration_seconds=args.min_loop_iteration_seconds,
        max_new_transaction_starts=args.max_new_transaction_starts,
        new_transaction_start_timeout=args.new_transaction_start_timeout,
        secret=_secret(args.secret_file, env),
        http=_http_settings(args),
        verify_held_state=args.verify_held_state,
        authentication_timeout=args.authentication_timeout,
        max_client_connections=args.max_client_connections,
        list_instances_max_limit=args.list_instances_max_limit,
        execution_acquire_timeout=args.execution_acquire_timeout,
        max_management_connections=args.max_management_connections,
        max_duroxide_connections=args.max_duroxide_connections,
        log_workflow_sql=args.log_workflow_sql,
        http_disable=args.http_disable,
        retention_days=args.retention_days,
        reconcile_interval=args.reconcile_interval,
        retention_max_instances=args.retention_max_instances,
        explicit=frozenset(from_env | given.keys()),
    )


def _check_pg_durable_ranges(args: argparse.Namespace) -> None:
    """Flags standing for pg_durable settings take pg_durable's ranges."""
    for setting in durable.FLAG_SETTINGS:
        try:
            durable.check_range(setting, getattr(args, setting.field))
        except ValueError as exc:
            raise ConfigError(f"{setting.flag} {exc}") from None


@dataclass(frozen=True, slots=True)
class ServerConfigured:
    """Settings after the server's `pg_durable.*` lines, and what was left unused, and why."""

    settings: Settings
    unused: tuple[tuple[str, str], ...] = ()  # (pg_durable.<name>, reason)


def apply_server_config(
    settings: Settings, upstream: UpstreamDSN, found: Iterable[ServerValue]
) -> ServerConfigured:
    """Take each `pg_durable.*` value the server's configuration gives as its flag would be,
    unless that flag or its PGDURABLE_* variable was given (they win)."""
    changes: dict[str, object] = {}
    unused: list[tuple[str, str]] = []
    shown = durable.effective_values(settings, upstream)
    for item in found:
        setting = durable.BY_NAME.get(item.name)
        if item.value == "":
            continue  # a line removed from the file leaves an empty placeholder behind
        if setting is None:
            unused.append((item.name, "pgdurable has no such setting"))
        elif setting.from_upstream:
            if item.value != shown[item.name]:
                unused.append((item.name, f"pgdurable takes it from {setting.flag}"))
        elif setting.field in settings.explicit:
            if item.value.strip() != shown[item.name]:
                unused.append((item.name, f"{setting.flag} was given"))
        else:
            changes[setting.field] = _server_value(setting, item, getattr(settings, setting.field))
    return ServerConfigured(dataclasses.replace(settings, **changes), tuple(unused))  # type: ignore[arg-type]


def _server_value(
    setting: durable.DurableSetting, item: ServerValue, current: object
) -> bool | int | float:
    """The value of a server line, of the type of the Settings field it stands for."""
    try:
        value = durable.parse_value(setting, item.value)
        if isinstance(current, int) and isinstance(value, float):
            if not value.is_integer():
                raise ValueError("expects a whole number of seconds")
            value = int(value)
        return value
    except ValueError as exc:
        where = f"in {item.origin}" if item.origin else "in the server's configuration"
        raise ConfigError(
            f"invalid value for {item.name} {where}: {item.value!r} ({exc})"
        ) from None
