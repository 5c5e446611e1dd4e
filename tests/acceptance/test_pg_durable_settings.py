"""pg_durable's settings under pg_durable's names (issue 14): what a session sees (SHOW,
\\dconfig), the server's `pg_durable.*` lines honoured as flags, and the per-call page cap."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database
from tests.support.proxy import ProxyProcess

SETTINGS_DB = "pgd_settings"  # the extra pgdurable's own catalog: df._settings stays ours
NAME = "pg_durable.max_user_connections"


def _psql(cluster: Cluster, dsn: str, *commands: str, env: dict[str, str] | None = None) -> str:
    """Run commands through the cluster's own psql; its output, unaligned."""
    args = [str(cluster.bindir / "psql"), dsn, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        args += ["-c", command]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- item 1: a session sees pgdurable's values under pg_durable's names -----------------------


EXPECTED_DEFAULTS = {
    "pg_durable.database": "postgres",
    "pg_durable.worker_role": "postgres",
    "pg_durable.enable_superuser_instances": "off",
    "pg_durable.max_user_connections": "10",
    "pg_durable.max_management_connections": "6",
    "pg_durable.max_duroxide_connections": "10",
    "pg_durable.execution_acquire_timeout": "30",
    "pg_durable.max_new_transaction_starts": "2",
    "pg_durable.new_transaction_start_timeout": "5",
    "pg_durable.list_instances_max_limit": "1000",
    "pg_durable.retention_days": "30",
    "pg_durable.reconcile_interval": "3600",
    "pg_durable.log_workflow_sql": "off",
}


@pytest.mark.parametrize("database", ["postgres", "template1"])
def test_psql_shows_and_lists_pg_durables_settings(
    proxy: ProxyProcess, cluster: Cluster, database: str
) -> None:
    """SHOW and \\dconfig, in the catalog's database and in another; a client's own
    PGOPTIONS cannot put its values in their place."""
    out = _psql(
        cluster,
        proxy.dsn(dbname=database),
        "SHOW pg_durable.enable_superuser_instances",
        r"\dconfig pg_durable.*",
        r"\dconfig+ pg_durable.list_instances_max_limit",
        env={"PGOPTIONS": "-c pg_durable.enable_superuser_instances=on"},
    )
    lines = out.splitlines()
    assert lines[0] == "off"
    listed = dict(line.split("|", 1) for line in lines[1:-1])
    assert {name: listed.get(name) for name in EXPECTED_DEFAULTS} == EXPECTED_DEFAULTS
    assert listed["pg_durable.host"] == "127.0.0.1"
    assert lines[-1].startswith("pg_durable.list_instances_max_limit|1000|integer|superuser")


def test_a_clients_startup_parameters_do_not_replace_pgdurables(proxy: ProxyProcess) -> None:
    async def show() -> tuple[str, str]:
        conn = await asyncpg.connect(
            proxy.dsn(), server_settings={"PG_DURABLE.max_user_connections": "999"}
        )
        try:
            row = await conn.fetchrow(
                "SELECT current_setting('pg_durable.max_user_connections'), "
                "(SELECT setting FROM pg_catalog.pg_settings "
                " WHERE name = 'pg_durable.max_user_connections')"
            )
            assert row is not None
            return row[0], row[1]
        finally:
            await conn.close()

    assert asyncio.run(show()) == ("10", "10")


# -- item 2: pg_durable.* lines in postgresql.conf -------------------------------------------


def _set_conf(cluster: Cluster, lines: str, check: tuple[str, str | None]) -> None:
    """Put `lines` at the end of postgresql.conf (or take them out: '') and reload; wait
    until a new session sees `check` (name, value)."""
    conf = cluster.datadir / "postgresql.conf"
    text = conf.read_text()
    base = text.split(MARK, 1)[0]
    conf.write_text(base + (MARK + lines if lines else ""))
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    name, value = check
    while time.monotonic() < deadline:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            seen = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
        if seen is not None and (seen[0] or None) == value:
            return
        time.sleep(0.02)
    raise AssertionError(f"the server did not reload {name} = {value}")


MARK = "\n# -- pgdurable settings test --\n"
CONF = """pg_durable.enable_superuser_instances = on
pg_durable.max_user_connections = 7
pg_durable.max_new_transaction_starts = 4
pg_durable.list_instances_max_limit = 50
pg_durable.execution_acquire_timeout = '2min'
pg_durable.max_duroxide_connections = 5
pg_durable.worker_count = 2
"""


@pytest.fixture(scope="module")
def configured_proxy(
    proxy: ProxyProcess, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """pgdurable started (on a database of its own) while postgresql.conf has CONF lines; a
    flag gives max_new_transaction_starts too. `proxy` comes first: it must not read them."""
    upstream = create_database(cluster, SETTINGS_DB)
    log = tmp_path_factory.mktemp("configured-proxy") / "pgdurable.log"
    args = ["--max-new-transaction-starts", "3"]
    process = ProxyProcess(upstream, extra_args=args, log_path=log)
    try:
        _set_conf(cluster, CONF, ("pg_durable.max_user_connections", "7"))
        process.start()
    finally:
        _set_conf(cluster, "", ("pg_durable.max_user_connections", None))
    yield process
    process.stop()


def test_postgresql_conf_lines_count_as_flags_and_flags_win(
    configured_proxy: ProxyProcess, cluster: Cluster
) -> None:
    dsn = configured_proxy.dsn(dbname=SETTINGS_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        shown = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name LIKE 'pg_durable.%'"
            ).fetchall()
        )
        instance = conn.execute("SELECT df.start('SELECT 41 + 1')").fetchone()
        assert instance is not None
        deadline = time.monotonic() + 10
        while conn.execute("SELECT df.status(%s)", instance).fetchone() != ("completed",):
            assert time.monotonic() < deadline, "a superuser's workflow did not complete"
            time.sleep(0.02)
    assert shown["pg_durable.enable_superuser_instances"] == "on"
    assert shown["pg_durable.max_user_connections"] == "7"
    assert shown["pg_durable.max_new_transaction_starts"] == "3"  # the flag
    assert shown["pg_durable.list_instances_max_limit"] == "50"
    assert shown["pg_durable.execution_acquire_timeout"] == "120"
    assert shown["pg_durable.database"] == SETTINGS_DB
    assert shown["pg_durable.max_duroxide_connections"] == "5"
    assert configured_proxy.log_path is not None
    log = configured_proxy.log_path.read_text()
    assert "name=pg_durable.worker_count" in log  # pgdurable has no such setting


def test_a_bad_postgresql_conf_line_stops_pgdurable_with_one_line(
    proxy: ProxyProcess, cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "pgdurable.log"
    upstream = cluster.dsn()  # it stops before it publishes anything there
    process = ProxyProcess(upstream, log_path=log)
    try:
        _set_conf(cluster, "pg_durable.max_user_connections = lots\n", (NAME, "lots"))
        with pytest.raises(RuntimeError, match="exited with 2"):
            process.start()
    finally:
        process.kill()  # when it did start after all
        _set_conf(cluster, "", (NAME, None))
    errors = [line for line in log.read_text().splitlines() if line.startswith("pgdurable:")]
    conf = cluster.datadir / "postgresql.conf"
    assert len(errors) == 1
    assert errors[0].startswith(f"pgdurable: error: invalid value for {NAME} in {conf} line "), (
        errors
    )
    assert errors[0].endswith(": 'lots' (expects an integer)"), errors


def test_a_superusers_refusal_names_what_allows_it(proxy: ProxyProcess) -> None:
    with (
        psycopg.connect(proxy.dsn()) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as info,
    ):
        conn.execute("SET pg_durable.enable_superuser_instances = on")
        conn.execute("SELECT df.start('SELECT 1')")
    assert info.value.diag.message_primary == (
        'pg_durable: superuser instances are disabled. current_user "postgres" is a superuser, '
        "but pg_durable.enable_superuser_instances is off. Start pgdurable with "
        "--enable-superuser-instances (or set pg_durable.enable_superuser_instances = on in "
        "postgresql.conf, then restart pgdurable) to allow this."
    )


# -- item 3: pg_durable.list_instances_max_limit, read on every call ---------------------------


def _over_cap(conn: psycopg.Connection[tuple[object, ...]], limit: int) -> str | None:
    """The cap df.list_instances names when `limit` rows is too many; None if allowed."""
    try:
        with conn.transaction():
            conn.execute("SELECT count(*) FROM df.list_instances(NULL, %s)", (limit,))
    except psycopg.errors.InvalidParameterValue as exc:
        message = exc.diag.message_primary or ""
        return message.split("pg_durable.list_instances_max_limit (", 1)[1].split(")")[0]
    return None


def test_a_superusers_session_value_takes_effect(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        assert _over_cap(conn, 1001) == "1000"
        conn.execute("SET pg_durable.list_instances_max_limit = 3")
        assert _over_cap(conn, 4) == "3" and _over_cap(conn, 3) is None
        conn.execute("SET pg_durable.list_instances_max_limit = 5000")
        assert _over_cap(conn, 5000) is None
        for value, message in [
            (
                "0",
                '0 is outside the valid range for parameter "pg_durable.list_instances_max_'
                'limit" (1 .. 1000000)',
            ),
            ("lots", 'invalid value for parameter "pg_durable.list_instances_max_limit": "lots"'),
        ]:
            conn.execute(
                "SELECT set_config('pg_durable.list_instances_max_limit', %s, false)", (value,)
            )
            with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
                conn.execute("SELECT df.list_instances()")
            assert info.value.diag.message_primary == message


def test_a_non_superuser_can_lower_the_cap_but_not_raise_it(
    proxy: ProxyProcess, wf_dsn: str, cluster: Cluster
) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("SET pg_durable.list_instances_max_limit = 3")
        assert _over_cap(conn, 4) == "3"
        conn.execute("SET pg_durable.list_instances_max_limit = 5000")
        assert _over_cap(conn, 1001) == "1000"
    role = wf_dsn.split("//", 1)[1].split("@", 1)[0]
    grant = f"GRANT SET ON PARAMETER pg_durable.list_instances_max_limit TO {role}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(grant)
        try:  # pg_durable: a superuser may delegate raising it
            with psycopg.connect(wf_dsn, autocommit=True) as conn:
                conn.execute("SET pg_durable.list_instances_max_limit = 5000")
                assert _over_cap(conn, 1001) is None
        finally:
            admin.execute(grant.replace("GRANT", "REVOKE").replace(" TO ", " FROM "))
