"""The engine's configuration: one frozen object, passed down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from engine.executors.ssrf import AllowEntry

MIB = 1024 * 1024
# An SQL step's result document is stored as jsonb, whose hard limit is 256 MiB: 64 MiB
# leaves room for a JOIN of three such branches, whose result holds theirs. pgdurable holds
# a result several times over while recording it (about ten), so this also bounds a step's
# memory to a few hundred MiB.
DEFAULT_MAX_RESULT_BYTES = 64 * MIB


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Limits of HTTP steps (pg_durable has none) and the --http-allow exceptions."""

    allow: tuple[AllowEntry, ...] = ()
    max_timeout: float = 300.0  # caps a node's timeout_seconds
    max_request_bytes: int = 10 * MIB  # body, or the encoded multipart total
    max_response_bytes: int = 10 * MIB
    max_redirects: int = 5  # followed, each hop re-checked; beyond: the 3xx is the result
    enabled: bool = True  # False (--http-disable): as pg_durable built without HTTP


class StepStatements(Protocol):
    """An SQL step of more than one statement: the text before its last statement (run as
    one simple query), the last one (whose rows are the step's result), and whether any of
    them begins or ends a transaction (BEGIN, COMMIT, ROLLBACK, ...)."""

    @property
    def before(self) -> str: ...
    @property
    def last(self) -> str: ...
    @property
    def controls_transaction(self) -> bool: ...


# A step's text split before its last statement by PostgreSQL's own parser (pgdurable_proxy
# passes dsl's); None for one statement, or a text that does not parse.
StatementSplitter = Callable[[str], StepStatements | None]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine reaches PostgreSQL and how hard it may push."""

    admin_dsn: str
    # libpq URI for a step connection: (user, password or None, database) -> DSN
    step_dsn: Callable[[str, str | None, str], str]
    catalog_database: str
    admin_user: str = ""
    # with a secret, steps log in through per-owner runner roles (password-only clusters)
    runner_secret: bytes | None = None
    max_user_connections: int = 10
    execution_acquire_timeout: float = 30.0  # an SQL step's wait for a step slot
    log_workflow_sql: bool = False  # log each SQL step's substituted statement (info)
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # an SQL step's result document
    step_idle_timeout: float = 4.0  # a pooled step connection unused this long is closed
    lease_seconds: float = 30.0
    poll_interval: float = 1.0
    enable_superuser_instances: bool = False
    list_instances_max_limit: int = 1000
    # retention (pg_durable 0.2.4): finished instances older than retention_days, or beyond
    # the newest retention_max_instances (0: no cap), go every reconcile_interval s (0: never)
    retention_days: int = 30
    retention_max_instances: int = 10_000
    reconcile_interval: int = 3600
    min_loop_iteration_seconds: float = 1.0  # pg_durable pads every loop iteration to 1 s
    # the engine's own pool: scheduler passes, advances, lease renewal, retention (an
    # advance holds one for its transaction: over a distant link, for several round trips)
    admin_pool_size: int = 15
    max_new_transaction_starts: int = 2  # concurrent transaction_mode => 'new' sessions
    new_transaction_start_timeout: float = 5.0  # wait for one of those slots
    http: HttpSettings = field(default_factory=HttpSettings)
    verify_held_state: bool = False  # compare held state with the database after each use
    # without one, a step of several statements fails as a prepared statement does
    split_statements: StatementSplitter | None = None


@dataclass(frozen=True, slots=True)
class ServerValue:
    """A `pg_durable.*` value the server's configuration gives (postgresql.conf, ALTER SYSTEM,
    or a superuser's ALTER ROLE/DATABASE SET: nobody else may set these names there)."""

    name: str
    value: str
    origin: str | None = None  # "<file> line <n>" when the server lets the engine see it


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the engine reads from the server before anything else, and what it makes of it:
    `apply` returns the settings to run with (or raises, and the engine fails)."""

    names: tuple[str, ...]
    apply: Callable[[tuple[ServerValue, ...]], EngineSettings]
