"""pg_durable's setting names (`pg_durable.*`) and the pgdurable Settings behind each.

pg_durable is configured through GUCs; pgdurable through flags. This table is the one place
that says which flag a `pg_durable.<name>` stands for, so that a session sees pgdurable's
values under pg_durable's names (SHOW, current_setting, \\dconfig) and a `pg_durable.*` line
in postgresql.conf is honoured as that flag would be. Values are shown as pg_durable shows
them: booleans `on`/`off`, timeouts in whole seconds.

`max_management_connections` and `max_duroxide_connections` together size the engine's own
pool (pg_durable's two pools, whose work pgdurable's one pool does). Not mapped (pgdurable
has nothing it could set, so a value would be shown but not obeyed): `worker_count` (never
shipped).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgdurable_proxy.config import Settings
    from pgdurable_proxy.dsn import UpstreamDSN

PREFIX = "pg_durable."


class Kind(StrEnum):
    """How a value is written, checked and shown."""

    BOOL = "bool"
    INTEGER = "integer"
    SECONDS = "seconds"  # a number of seconds (pg_durable: an integer)
    TEXT = "string"


class Context(StrEnum):
    """Who may change the setting in pg_durable (pg_settings.context)."""

    POSTMASTER = "postmaster"  # restart: for pgdurable, start it again
    SUPERUSER = "superuser"  # a superuser's SET takes effect in that session


@dataclass(frozen=True, slots=True)
class DurableSetting:
    """One `pg_durable.<name>` and the Settings field (or upstream part) it shows."""

    name: str
    field: str  # a Settings field, or "upstream.<attribute>" (shown, never set from here)
    kind: Kind
    description: str
    minimum: float | None = None
    maximum: float | None = None
    context: Context = Context.POSTMASTER

    @property
    def full_name(self) -> str:
        return PREFIX + self.name

    @property
    def from_upstream(self) -> bool:
        """True when the value is part of --upstream (where pgdurable connects)."""
        return self.field.startswith("upstream.")

    @property
    def flag(self) -> str:
        return "--upstream" if self.from_upstream else "--" + self.field.replace("_", "-")


def _upstream(name: str, attribute: str, description: str) -> DurableSetting:
    return DurableSetting(name, f"upstream.{attribute}", Kind.TEXT, description)


SETTINGS: tuple[DurableSetting, ...] = (
    _upstream("database", "dbname", "The database holding the df catalog."),
    _upstream("worker_role", "user", "The role pgdurable's engine connects as."),
    _upstream("host", "host", "The host (or socket directory) of PostgreSQL."),
    DurableSetting(
        "enable_superuser_instances",
        "enable_superuser_instances",
        Kind.BOOL,
        "Allow workflows owned by superusers.",
    ),
    DurableSetting(
        "max_user_connections",
        "max_user_connections",
        Kind.INTEGER,
        "SQL steps running at once.",
        1,
        1000,
    ),
    DurableSetting(
        "max_management_connections",
        "max_management_connections",
        Kind.INTEGER,
        "The engine's connections for loading and advancing instances (with the next).",
        1,
        1000,
    ),
    DurableSetting(
        "max_duroxide_connections",
        "max_duroxide_connections",
        Kind.INTEGER,
        "The engine's connections for scheduling and claiming (one of them listens).",
        2,
        1000,
    ),
    DurableSetting(
        "execution_acquire_timeout",
        "execution_acquire_timeout",
        Kind.SECONDS,
        "Seconds an SQL step waits for a slot before it fails.",
        1,
        3600,
    ),
    DurableSetting(
        "max_new_transaction_starts",
        "max_new_transaction_starts",
        Kind.INTEGER,
        "transaction_mode => 'new' start sessions open at once.",
        1,
        1000,
    ),
    DurableSetting(
        "new_transaction_start_timeout",
        "new_transaction_start_timeout",
        Kind.SECONDS,
        "Seconds such a start waits for a session.",
        1,
        3600,
    ),
    DurableSetting(
        "list_instances_max_limit",
        "list_instances_max_limit",
        Kind.INTEGER,
        "Most rows one df.list_instances call may ask for.",
        1,
        1_000_000,
        Context.SUPERUSER,
    ),
    DurableSetting(
        "retention_days",
        "retention_days",
        Kind.INTEGER,
        "Days a finished instance is kept.",
        0,
        36500,
    ),
    DurableSetting(
        "reconcile_interval",
        "reconcile_interval",
        Kind.SECONDS,
        "Seconds between retention passes (0: none).",
        0,
        86400,
    ),
    DurableSetting(
        "log_workflow_sql",
        "log_workflow_sql",
        Kind.BOOL,
        "Write each step's substituted SQL to the log.",
    ),
)
BY_NAME = {setting.full_name: setting for setting in SETTINGS}
FLAG_SETTINGS = tuple(setting for setting in SETTINGS if not setting.from_upstream)

_SECONDS = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|min|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _parse_bool(text: str) -> bool:
    """PostgreSQL's parse_bool: true/yes/on/1, false/no/off/0, and unique prefixes."""
    word = text.strip().lower()
    if word == "1" or (word and ("true".startswith(word) or "yes".startswith(word))):
        return True
    if word == "0" or (word and ("false".startswith(word) or "no".startswith(word))):
        return False
    if len(word) >= 2 and "on".startswith(word):
        return True
    if len(word) >= 2 and "off".startswith(word):
        return False
    raise ValueError("expects a Boolean value (on or off)")


def parse_value(setting: DurableSetting, text: str) -> bool | int | float:
    """The value a configuration line gives `setting`; ValueError(reason) if it is bad."""
    if setting.kind is Kind.BOOL:
        return _parse_bool(text)
    if setting.kind is Kind.INTEGER:
        try:
            value: float = int(text.strip())
        except ValueError:
            raise ValueError("expects an integer") from None
    else:
        match = _SECONDS.match(text)
        if match is None:
            raise ValueError("expects a number of seconds")
        value = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    check_range(setting, value)
    return value


def check_range(setting: DurableSetting, value: float) -> None:
    """ValueError(reason) when `value` is outside pg_durable's range for `setting`."""
    low, high = setting.minimum, setting.maximum
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"must be between {_number(low)} and {_number(high)}")


def _number(value: float) -> str:
    """An integral value without its '.0' (pg_durable shows seconds as integers)."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def shown(setting: DurableSetting, value: object) -> str:
    """`value` as pg_durable shows it."""
    if setting.kind is Kind.BOOL:
        return "on" if value else "off"
    if setting.kind in (Kind.INTEGER, Kind.SECONDS):
        assert isinstance(value, int | float)
        return _number(value)
    return str(value)


def effective_values(settings: Settings, upstream: UpstreamDSN) -> dict[str, str]:
    """Every mapped `pg_durable.*` name with the value pgdurable runs with."""
    values = {}
    for setting in SETTINGS:
        if setting.from_upstream:
            value: object = getattr(upstream, setting.field.removeprefix("upstream."))
        else:
            value = getattr(settings, setting.field)
        values[setting.full_name] = shown(setting, value)
    return values


def startup_parameters(values: dict[str, str]) -> bytes:
    """The name/value pairs the relay adds to each StartupMessage it forwards."""
    return b"".join(
        name.encode() + b"\0" + value.encode() + b"\0" for name, value in values.items()
    )


_COLUMNS = (
    "name, setting, unit, category, short_desc, extra_desc, context, vartype, source, "
    "min_val, max_val, enumvals, boot_val, reset_val, sourcefile, sourceline, pending_restart"
)
_VARTYPES = {
    Kind.BOOL: "bool",
    Kind.INTEGER: "integer",
    Kind.SECONDS: "integer",
    Kind.TEXT: "string",
}
# pg_durable's own defaults of the names pgdurable takes from --upstream.
_UPSTREAM_DEFAULTS = {"database": "postgres", "worker_role": "postgres", "host": ""}


def settings_relation(defaults: Settings) -> str:
    """pg_settings plus a row per setting a session has (its value: the placeholder the
    relay set at startup, or the session's own SET), as a parenthesised subquery; `defaults`
    (Settings with no flag given) gives each its boot_val."""
    rows = ", ".join(_row(setting, defaults) for setting in SETTINGS)
    return (
        f"(SELECT {_COLUMNS} FROM pg_catalog.pg_settings UNION ALL "
        "SELECT d.name, pg_catalog.current_setting(d.name, true), NULL::text, "
        "'Customized Options'::text, d.short_desc, NULL::text, d.context, d.vartype, "
        "CASE WHEN pg_catalog.current_setting(d.name, true) = d.boot_val THEN 'default' "
        "ELSE 'client' END, d.min_val, d.max_val, NULL::text[], d.boot_val, "
        "pg_catalog.current_setting(d.name, true), NULL::text, NULL::integer, false "
        f"FROM (VALUES {rows}) AS d(name, vartype, context, short_desc, min_val, max_val, "
        "boot_val) WHERE pg_catalog.current_setting(d.name, true) IS NOT NULL)"
    )


def _row(setting: DurableSetting, defaults: Settings) -> str:
    if setting.from_upstream:
        default = _UPSTREAM_DEFAULTS[setting.name]
    else:
        default = shown(setting, getattr(defaults, setting.field))
    bounds = [
        _literal(_number(bound)) if bound is not None else "NULL::text"
        for bound in (setting.minimum, setting.maximum)
    ]
    values = [setting.full_name, _VARTYPES[setting.kind], setting.context, setting.description]
    return f"({', '.join(map(_literal, values))}, {', '.join(bounds)}, {_literal(default)})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
