"""A database built by an older catalog is upgraded to exactly the fresh catalog.

The old databases are built from the frozen copy of the pre-release migrations 0001-0019 or
of a released catalog's install script (tests/support/pre_release.py), hold live data
(instances pending, running and completed, their engine rows, variables, grants), and are
upgraded by the real installer; their `pg_dump --schema-only` must equal the fresh
catalog's, and their rows must survive.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from engine.catalog import catalog_version, load_upgrades
from engine.errors import MigrationError
from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database, install_catalog
from tests.support.pre_release import build_pre_release_catalog, build_released_catalog
from tests.support.proxy import ProxyProcess

OWNER = "upgrade_owner"

# Rows compared before and after an upgrade: table -> the columns an upgrade may add.
TABLES = {
    "instances": ["failure_policy"],
    "nodes": [],
    "vars": [],
    "_instance_vars": [],
    "_tasks": [],
    "_node_state": ["result_columns"],
    "_advance": ["node_id", "claimed_by", "claimed_until"],
    "_executions": ["output_columns"],
    "_signals": [],
}


def _dump(cluster: Cluster, dsn: str, dbname: str) -> str:
    """The schema of a database as pg_dump writes it, with what must differ normalised: the
    database's name (df.target_database) and the install time (df.version)."""
    dumped = subprocess.run(
        [str(cluster.bindir / "pg_dump"), "--schema-only", dsn],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    lines = [
        line for line in dumped.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    ]
    text = "\n".join(lines).replace(dbname, "<database>")
    return re.sub(r"built \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "built <time>", text)


def _as_owner(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn.replace("postgres@", f"{OWNER}@", 1), autocommit=True)


def _grant_usage(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER,)).fetchone():
            conn.execute(f"CREATE ROLE {OWNER} LOGIN")
        conn.execute("SELECT df.grant_usage(%s)", (OWNER,))


@pytest.fixture(scope="module")
def fresh_dump(cluster: Cluster) -> str:
    """The schema of a fresh catalog, with the owner's grants."""
    dsn = create_database(cluster, "df_catalog_fresh")
    assert install_catalog(dsn) == catalog_version()
    _grant_usage(dsn)
    return _dump(cluster, dsn, "df_catalog_fresh")


def _add_live_data(dsn: str) -> dict[str, str]:
    """Instances through the old catalog's df.start: two pending (queued for the engine),
    one made running (a step done, a timer due tomorrow, a signal waiting) and one made
    completed, as the engine would have left them. Returns their ids by role."""
    _grant_usage(dsn)
    with _as_owner(dsn) as owner:
        owner.execute("SELECT df.setvar('greeting', 'hello')")
        ids = {}
        for role, fut in (
            ("pending", "df.sql('SELECT 1 AS one') ~> df.sql('SELECT ''{greeting}'' AS word')"),
            ("pending_join", "df.sql('SELECT 2 AS two') & df.sql('SELECT 3 AS three')"),
            ("running", "df.sql('SELECT 5 AS five') ~> df.sleep(86400)"),
            ("completed", "df.sql('SELECT 4 AS four')"),
        ):
            row = owner.execute(f"SELECT df.start({fut})").fetchone()
            assert row is not None
            ids[role] = str(row[0])
    result = '{"rows":[{"five":5}],"row_count":1}'
    with psycopg.connect(dsn, autocommit=True) as admin, admin.transaction():
        running, completed = ids["running"], ids["completed"]
        for instance, status in ((running, "running"), (completed, "completed")):
            admin.execute("DELETE FROM df._advance WHERE instance_id = %s", (instance,))
            admin.execute("UPDATE df.instances SET status = %s WHERE id = %s", (status, instance))
            admin.execute(
                "INSERT INTO df._executions (instance_id, execution_id, submitted_by, status,"
                " output) SELECT id, 1, submitted_by, %s, %s FROM df.instances WHERE id = %s",
                ("Running" if status == "running" else "Completed", None, instance),
            )
        admin.execute(
            'UPDATE df.nodes SET status = \'completed\', result = \'{"rows":[{"four":4}],'
            '"row_count":1}\' WHERE instance_id = %s',
            (completed,),
        )
        admin.execute(
            "UPDATE df._executions SET output = %s, completed_at = now() WHERE instance_id = %s",
            ('{"rows":[{"four":4}],"row_count":1}', completed),
        )
        nodes = dict(
            admin.execute(
                "SELECT node_type, id FROM df.nodes WHERE instance_id = %s", (running,)
            ).fetchall()
        )
        admin.execute(
            "UPDATE df.nodes SET status = 'running' WHERE instance_id = %s AND node_type <> 'SQL'",
            (running,),
        )
        admin.execute(
            "UPDATE df.nodes SET status = 'completed', result = %s WHERE instance_id = %s "
            "AND node_type = 'SQL'",
            (result, running),
        )
        admin.execute(
            "INSERT INTO df._node_state (instance_id, node_id, raw_result, delivery) "
            "VALUES (%s, %s, %s, 'exactly-once')",
            (running, nodes["SQL"], result),
        )
        admin.execute(
            "INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at) "
            "VALUES (%s, %s, 'SLEEP', '86400', now() + interval '1 day')",
            (running, nodes["SLEEP"]),
        )
        admin.execute(
            "INSERT INTO df._signals (instance_id, signal_name, data) VALUES (%s, 'go', '1')",
            (running,),
        )
    return ids


def _rows(dsn: str) -> dict[str, list[str]]:
    """Every row of the catalog's data tables (without the columns an upgrade adds)."""
    with psycopg.connect(dsn) as conn:
        return {
            table: [
                r[0]
                for r in conn.execute(
                    f"SELECT (to_jsonb(t) - %s::text[])::text AS r FROM df.{table} t ORDER BY 1",
                    (added,),
                )
            ]
            for table, added in TABLES.items()
        }


def _wait_completed(dsn: str, instance: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    with _as_owner(dsn) as owner:
        while time.monotonic() < deadline:
            row = owner.execute(
                "SELECT df.status(%s), df.result(%s)", (instance, instance)
            ).fetchone()
            assert row is not None
            if row[0] not in ("pending", "running"):
                assert row[0] == "completed", row
                return str(row[1])
            time.sleep(0.1)
    raise TimeoutError(f"{instance} did not complete")


@pytest.mark.parametrize("version", [17, 18, 19, 20])
def test_an_older_database_is_upgraded_to_the_fresh_catalog_with_its_data(
    cluster: Cluster, fresh_dump: str, version: int, tmp_path: Path
) -> None:
    dbname = f"df_upgrade_from_{version}"
    dsn = create_database(cluster, dbname)
    if version < 20:
        build_pre_release_catalog(dsn, version)
    else:
        build_released_catalog(dsn, version)
    ids = _add_live_data(dsn)
    before = _rows(dsn)
    with psycopg.connect(dsn) as conn:
        history = conn.execute("SELECT version, name FROM df._migrations ORDER BY 1").fetchall()
    assert [v for v, _ in history] == (list(range(1, version + 1)) if version < 20 else [version])

    assert install_catalog(dsn) == catalog_version()
    assert _dump(cluster, dsn, dbname) == fresh_dump
    assert _rows(dsn) == before
    with psycopg.connect(dsn) as conn:
        after = conn.execute("SELECT version, name FROM df._migrations ORDER BY 1").fetchall()
        reached = [(u.version, u.name) for u in load_upgrades() if u.version > version]
        assert after == [*history, *reached]
        assert install_catalog(dsn) == catalog_version()  # a second run changes nothing
        assert conn.execute("SELECT version, name FROM df._migrations ORDER BY 1").fetchall() == (
            after
        )
    assert _dump(cluster, dsn, dbname) == fresh_dump
    if version != 20:
        return
    # The engine goes on with the instances queued before the upgrade.
    proxy = ProxyProcess(cluster.dsn(dbname=dbname), log_path=tmp_path / "pgdurable.log")
    proxy.start()
    try:
        assert (
            _wait_completed(dsn, ids["pending"]) == '{"rows": [{"word": "hello"}], "row_count": 1}'
        )
        assert '"two": 2' in _wait_completed(dsn, ids["pending_join"])
    finally:
        proxy.stop()
    with _as_owner(dsn) as owner:
        statuses = owner.execute(
            "SELECT df.status(%s), df.status(%s)", (ids["running"], ids["completed"])
        ).fetchone()
    assert statuses == ("running", "completed")


def test_a_database_older_than_0017_is_refused_with_what_to_do(cluster: Cluster) -> None:
    dsn = create_database(cluster, "df_upgrade_from_16")
    build_pre_release_catalog(dsn, 16)
    with pytest.raises(MigrationError, match="pre-release migration 0016, older than 0017"):
        install_catalog(dsn)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT max(version) FROM df._migrations").fetchone() == (16,)
