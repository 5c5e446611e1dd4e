"""pg_durable's setting names: values, flags vs the server's lines, startup parameters and
the pg_settings rows a statement about them reads."""

from __future__ import annotations

import pytest

from dsl.settings_view import mentions_settings_view, with_settings_rows
from engine.settings import ServerValue
from pgdurable_proxy import pg_durable_settings as durable
from pgdurable_proxy.cli import engine_settings
from pgdurable_proxy.config import ConfigError, apply_server_config, parse_settings
from pgdurable_proxy.dsn import parse_dsn
from pgdurable_proxy.intercept import Interceptor
from pgdurable_proxy.metrics import Metrics
from pgdurable_proxy.wire.startup import StartupMessage, parse_startup_packet, with_parameters
from tests.support.rawwire import startup_packet

UPSTREAM = parse_dsn("postgresql://admin@db.example:5433/app")


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("enable_superuser_instances", "on", True),
        ("enable_superuser_instances", " TRUE ", True),
        ("enable_superuser_instances", "ye", True),
        ("enable_superuser_instances", "of", False),
        ("enable_superuser_instances", "0", False),
        ("max_user_connections", "1000", 1000),
        ("execution_acquire_timeout", "90", 90.0),
        ("execution_acquire_timeout", "2min", 120.0),
        ("reconcile_interval", "0", 0.0),
    ],
)
def test_values_are_read_as_postgresql_reads_them(name: str, text: str, value: object) -> None:
    assert durable.parse_value(durable.BY_NAME["pg_durable." + name], text) == value


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("enable_superuser_instances", "o", "expects a Boolean value"),
        ("max_user_connections", "lots", "expects an integer"),
        ("max_user_connections", "0", "must be between 1 and 1000"),
        ("list_instances_max_limit", "1000001", "must be between 1 and 1000000"),
        ("execution_acquire_timeout", "1 week", "expects a number of seconds"),
        ("execution_acquire_timeout", "2h", "must be between 1 and 3600"),
    ],
)
def test_bad_values_say_why(name: str, text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        durable.parse_value(durable.BY_NAME["pg_durable." + name], text)


def test_new_flags_take_pg_durables_defaults_and_ranges() -> None:
    settings = parse_settings([], {})
    assert (settings.list_instances_max_limit, settings.execution_acquire_timeout) == (1000, 30)
    assert (settings.retention_days, settings.reconcile_interval) == (30, 3600)
    assert settings.log_workflow_sql is False and settings.explicit == frozenset()
    for argv in (["--max-user-connections", "0"], ["--retention-days", "36501"]):
        with pytest.raises(ConfigError, match=f"{argv[0]} must be between"):
            parse_settings(argv, {})


def test_the_servers_lines_count_unless_a_flag_or_variable_was_given() -> None:
    env = {"PGDURABLE_MAX_USER_CONNECTIONS": "4"}
    settings = parse_settings(["--retention-days", "3"], env)
    assert settings.explicit == {"max_user_connections", "retention_days"}
    found = [
        ServerValue("pg_durable.max_user_connections", "7", "/pg/postgresql.conf line 3"),
        ServerValue("pg_durable.retention_days", "9"),
        ServerValue("pg_durable.enable_superuser_instances", "on"),
        ServerValue("pg_durable.log_workflow_sql", ""),  # a line taken out of the file
        ServerValue("pg_durable.max_duroxide_connections", "5"),
        ServerValue("pg_durable.worker_count", "2"),
        ServerValue("pg_durable.database", "postgres"),
        ServerValue("pg_durable.worker_role", "admin"),
    ]
    configured = apply_server_config(settings, UPSTREAM, found)
    result = configured.settings
    assert (result.max_user_connections, result.retention_days) == (4, 3)
    assert result.enable_superuser_instances is True and result.log_workflow_sql is False
    assert (result.max_duroxide_connections, result.max_management_connections) == (5, 6)
    assert dict(configured.unused) == {
        "pg_durable.max_user_connections": "--max-user-connections was given",
        "pg_durable.retention_days": "--retention-days was given",
        "pg_durable.worker_count": "pgdurable has no such setting",
        "pg_durable.database": "pgdurable takes it from --upstream",
    }


@pytest.mark.parametrize(
    ("origin", "where"),
    [
        ("/pg/postgresql.auto.conf line 4", "in /pg/postgresql.auto.conf line 4"),
        (None, "in the server's configuration"),
    ],
)
def test_a_bad_server_line_is_a_config_error_naming_it(origin: str | None, where: str) -> None:
    found = [ServerValue("pg_durable.max_user_connections", "lots", origin)]
    with pytest.raises(ConfigError) as info:
        apply_server_config(parse_settings([], {}), UPSTREAM, found)
    assert str(info.value) == (
        f"invalid value for pg_durable.max_user_connections {where}: 'lots' (expects an integer)"
    )


def test_effective_values_are_shown_as_pg_durable_shows_them() -> None:
    settings = parse_settings(["--new-transaction-start-timeout", "2.5"], {})
    values = durable.effective_values(settings, UPSTREAM)
    assert values["pg_durable.database"] == "app"
    assert values["pg_durable.worker_role"] == "admin"
    assert values["pg_durable.host"] == "db.example"
    assert values["pg_durable.enable_superuser_instances"] == "off"
    assert values["pg_durable.new_transaction_start_timeout"] == "2.5"
    assert values["pg_durable.execution_acquire_timeout"] == "30"
    assert set(values) == set(durable.BY_NAME)
    raw = durable.startup_parameters({"pg_durable.a": "1", "pg_durable.b": "on"})
    assert raw == b"pg_durable.a\x001\x00pg_durable.b\x00on\x00"


def _message(**params: str) -> StartupMessage:
    parsed = parse_startup_packet(startup_packet(**params))
    assert isinstance(parsed, StartupMessage)
    return parsed


def test_startup_parameters_are_added_and_the_clients_own_dropped() -> None:
    extra = durable.startup_parameters({"pg_durable.max_user_connections": "10"})
    plain = _message(application_name="app")
    added = parse_startup_packet(with_parameters(plain, extra, durable.PREFIX))
    assert isinstance(added, StartupMessage)
    assert added.params == {**plain.params, "pg_durable.max_user_connections": "10"}
    assert (added.major, added.minor) == (3, 0)
    theirs = _message(**{"PG_Durable.max_user_connections": "99", "options": "-c a=b"})
    replaced = parse_startup_packet(with_parameters(theirs, extra, durable.PREFIX))
    assert isinstance(replaced, StartupMessage)
    assert replaced.params == {
        "user": "postgres",
        "database": "postgres",
        "options": "-c a=b",
        "pg_durable.max_user_connections": "10",
    }
    assert with_parameters(plain, b"", durable.PREFIX) == plain.raw


RELATION = "(SELECT 1)"


@pytest.mark.parametrize(
    ("sql", "rewritten"),
    [
        (
            "SELECT s.name FROM pg_catalog.pg_settings s WHERE s.name ~ 'pg_durable'",
            "SELECT s.name FROM (SELECT 1) s WHERE s.name ~ 'pg_durable'",
        ),
        (
            "select * from PG_SETTINGS where name like 'pg_durable.%'",
            "select * from (SELECT 1) AS pg_settings where name like 'pg_durable.%'",
        ),
        (
            'SELECT 1 FROM t JOIN "pg_catalog" . "pg_settings" ON true -- pg_durable',
            "SELECT 1 FROM t JOIN (SELECT 1) AS pg_settings ON true -- pg_durable",
        ),
        ("SELECT 1 FROM ONLY pg_settings -- pg_durable", None),
        ("WITH pg_settings AS (SELECT 1) SELECT * FROM pg_settings -- pg_durable", None),
        ("UPDATE pg_settings SET setting = 'x' WHERE name = 'pg_durable.x'", None),
        ("SELECT 1 FROM other.pg_settings -- pg_durable", None),
        ("SELECT 'pg_settings pg_durable'", None),
    ],
)
def test_pg_settings_in_a_from_clause_is_replaced(sql: str, rewritten: str | None) -> None:
    assert mentions_settings_view(sql.encode())
    assert with_settings_rows(sql, RELATION) == rewritten


def test_texts_too_big_to_parse_on_the_event_loop_are_left_alone() -> None:
    sql = "SELECT * FROM pg_settings WHERE name = 'pg_durable.x' -- " + "x" * 300_000
    assert with_settings_rows(sql, RELATION) is None
    assert with_settings_rows(sql[:300], RELATION) is not None


def test_the_interceptor_adds_the_rows_in_every_database() -> None:
    interceptor = Interceptor(Metrics(), settings_relation=RELATION)
    sql = b"SELECT name FROM pg_settings WHERE name LIKE 'pg_durable.%'"
    message = b"Q" + (len(sql) + 5).to_bytes(4, "big") + sql + b"\0"
    expected = b"SELECT name FROM (SELECT 1) AS pg_settings WHERE name LIKE 'pg_durable.%'"
    verdict = interceptor.verdict(sql)
    assert verdict.rewritten is not None and verdict.rewritten.encode() == expected
    replacement = interceptor.settings_rows({}, ord("Q"), message)
    assert replacement is not None and replacement[5:-1] == expected
    plain = b"SELECT name FROM pg_settings"
    assert interceptor.verdict(plain).rewritten is None


def test_whole_seconds_where_the_flag_takes_whole_seconds() -> None:
    settings = parse_settings([], {})
    found = [ServerValue("pg_durable.execution_acquire_timeout", "2min")]
    result = apply_server_config(settings, UPSTREAM, found).settings
    assert result.execution_acquire_timeout == 120
    assert isinstance(result.execution_acquire_timeout, int)
    found = [ServerValue("pg_durable.execution_acquire_timeout", "1.5")]
    with pytest.raises(ConfigError, match=r"'1.5' \(expects a whole number of seconds\)"):
        apply_server_config(settings, UPSTREAM, found)
    found = [ServerValue("pg_durable.new_transaction_start_timeout", "1.5")]
    assert (
        apply_server_config(settings, UPSTREAM, found).settings.new_transaction_start_timeout == 1.5
    )


def test_the_engines_pool_is_pg_durables_two_pools_less_the_listener() -> None:
    """max_management_connections + max_duroxide_connections, as pg_durable budgets them;
    its listener is pgdurable's presence connection, apart from the pool."""
    assert engine_settings(parse_settings([], {}), UPSTREAM).admin_pool_size == 15
    flags = ["--max-management-connections", "1", "--max-duroxide-connections", "2"]
    assert engine_settings(parse_settings(flags, {}), UPSTREAM).admin_pool_size == 2
    with pytest.raises(ConfigError, match="--max-duroxide-connections must be between 2"):
        parse_settings(["--max-duroxide-connections", "1"], {})
