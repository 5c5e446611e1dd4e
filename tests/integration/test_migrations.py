"""The catalog installs in one transaction, idempotently, under a lock."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg

from engine.catalog import catalog_version, load_upgrades, migrate
from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database, install_catalog


def test_migrating_twice_and_concurrently_gives_one_version(cluster: Cluster) -> None:
    dsn = create_database(cluster, "df_migrate_twice")

    async def run() -> list[int]:
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        try:
            return list(await asyncio.gather(*(migrate(c) for c in conns)))
        finally:
            for conn in conns:
                await conn.close()

    expected = catalog_version()
    assert asyncio.run(run()) == [expected] * 3
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version, name FROM df._migrations ORDER BY 1").fetchall()
        later = [(u.version, u.name) for u in load_upgrades() if u.version > 20]
        assert rows == [(20, "catalog"), *later]
        tables = conn.execute(
            "SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables "
            "WHERE schemaname = 'df' AND tablename IN ('instances', 'nodes', 'vars')"
        ).fetchone()
        assert tables == (["instances", "nodes", "vars"],)
        rls = conn.execute(
            "SELECT bool_and(relrowsecurity) FROM pg_class WHERE oid IN "
            "('df.instances'::regclass, 'df.nodes'::regclass, 'df.vars'::regclass)"
        ).fetchone()
        assert rls == (True,)


def test_an_administrator_deleting_instances_removes_their_engine_rows(cluster: Cluster) -> None:
    """The per-step engine rows have no foreign key to df.instances (catalog/tables.sql):
    triggers (catalog/engine.sql) remove them with their instance, on DELETE and on
    TRUNCATE ... CASCADE."""
    dsn = create_database(cluster, "df_forget_rows")

    async def install() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(install())
    engine_rows = (
        "SELECT (SELECT count(*) FROM df._tasks), (SELECT count(*) FROM df._node_state), "
        "(SELECT count(*) FROM df._advance)"
    )
    ids = [f"0000000{n}" for n in range(3)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for instance in ids:
            node = instance[::-1]
            with conn.transaction():  # the catalog's foreign keys are checked at commit
                conn.execute(
                    "INSERT INTO df.instances (id, root_node, submitted_by) "
                    "VALUES (%s, %s, current_user::regrole)",
                    (instance, node),
                )
                conn.execute(
                    "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                    "VALUES (%s, %s, 'SQL', 'SELECT 1', current_user::regrole)",
                    (node, instance),
                )
            for table, columns in (
                ("_tasks", "(instance_id, node_id, node_type) VALUES (%s, %s, 'SQL')"),
                ("_node_state", "(instance_id, node_id, raw_result) VALUES (%s, %s, '{}')"),
            ):
                conn.execute(f"INSERT INTO df.{table} {columns}", (instance, node))
            conn.execute("INSERT INTO df._advance (instance_id) VALUES (%s)", (instance,))
        assert conn.execute(engine_rows).fetchone() == (3, 3, 3)
        with conn.transaction():  # an instance goes with its nodes (spec: no cascade there)
            conn.execute("DELETE FROM df.nodes WHERE instance_id = %s", (ids[0],))
            conn.execute("DELETE FROM df.instances WHERE id = %s", (ids[0],))
        assert conn.execute(engine_rows).fetchone() == (2, 2, 2)
        conn.execute("TRUNCATE df.instances CASCADE")
        assert conn.execute(engine_rows).fetchone() == (0, 0, 0)


# Node rows (type, left, right, query) and the check each breaks (None: accepted). The
# children are placeholders: the foreign keys are deferred, and each row is rolled back.
NODE_SHAPES = [
    *[((kind, None, None, "q"), None) for kind in ("SQL", "SLEEP", "WAIT_SCHEDULE", "BREAK")],
    *[((kind, None, None, "q"), None) for kind in ("HTTP", "HTTP_MULTIPART", "SIGNAL")],
    (("SQL", "aaaaaaaa", None, "q"), "nodes_structure_chk"),
    (("SIGNAL", None, "aaaaaaaa", "q"), "nodes_structure_chk"),
    (("SLEEP", None, None, None), "nodes_structure_chk"),
    (("THEN", "aaaaaaaa", "bbbbbbbb", None), None),
    (("THEN", "aaaaaaaa", "bbbbbbbb", "q"), "nodes_structure_chk"),
    (("THEN", "aaaaaaaa", None, None), "nodes_structure_chk"),
    (("IF", "aaaaaaaa", "bbbbbbbb", "{}"), None),
    (("IF", "aaaaaaaa", "bbbbbbbb", None), "nodes_structure_chk"),
    (("IF", None, "bbbbbbbb", "{}"), "nodes_structure_chk"),
    (("LOOP", "aaaaaaaa", None, None), None),
    (("LOOP", "aaaaaaaa", None, "{}"), None),
    (("LOOP", "aaaaaaaa", "bbbbbbbb", None), "nodes_structure_chk"),
    (("LOOP", None, None, None), "nodes_structure_chk"),
    (("JOIN", "aaaaaaaa", "bbbbbbbb", None), None),
    (("JOIN", "aaaaaaaa", "bbbbbbbb", "{}"), None),
    (("JOIN", None, "bbbbbbbb", None), "nodes_structure_chk"),
    (("RACE", "aaaaaaaa", "bbbbbbbb", None), None),
    (("RACE", "aaaaaaaa", "bbbbbbbb", "q"), "nodes_structure_chk"),
    (("SEQ", None, None, "q"), "nodes_node_type_chk"),
    (("sql", None, None, "q"), "nodes_node_type_chk"),
]

# Other columns of a node or an instance, and the check each value breaks (None: accepted).
COLUMN_VALUES = [
    ("nodes", "status", "pending", None),
    ("nodes", "status", "failed", None),
    ("nodes", "status", "skipped", "nodes_status_chk"),
    ("nodes", "status", "cancelled", "nodes_status_chk"),
    ("nodes", "result_name", "_ok9", None),
    ("nodes", "result_name", "9no", "nodes_result_name_chk"),
    ("nodes", "id", "ABCDEF01", "nodes_id_format_chk"),
    ("instances", "status", "cancelled", None),
    ("instances", "status", "paused", None),  # pgdurable's df.pause
    ("instances", "status", "skipped", "instances_status_chk"),
    ("instances", "id", "1234567", "instances_id_format_chk"),
    ("instances", "root_node", "xyz", "instances_root_node_format_chk"),
]


def _check_violated(conn: psycopg.Connection, sql: str, params: tuple[object, ...]) -> str | None:
    """Run one INSERT or UPDATE in a rolled-back savepoint; the check it broke, if any."""
    try:
        with conn.transaction():
            conn.execute(sql, params)
            raise _RolledBack
    except _RolledBack:
        return None
    except psycopg.errors.CheckViolation as exc:
        return exc.diag.constraint_name


class _RolledBack(Exception):
    pass


def test_the_catalog_checks_refuse_what_pg_durable_refuses(cluster: Cluster) -> None:
    """Every CHECK rule of the spec (§2.1, §2.2), from its rewritten, cheaper form (tables.sql)."""
    dsn = create_database(cluster, "df_checks")
    install_catalog(dsn)
    insert_node = (
        "INSERT INTO df.nodes (id, instance_id, node_type, left_node, right_node, query, "
        "submitted_by) VALUES ('0000000a', '0000000a', %s, %s, %s, %s, current_user::regrole)"
    )
    with psycopg.connect(dsn) as conn:
        for shape, expected in NODE_SHAPES:
            assert _check_violated(conn, insert_node, shape) == expected, shape
        conn.execute(
            "INSERT INTO df.instances (id, root_node, submitted_by) "
            "VALUES ('0000000a', '0000000a', current_user::regrole)"
        )
        conn.execute(insert_node, ("SQL", None, None, "q"))
        for table, column, value, expected in COLUMN_VALUES:
            update = f"UPDATE df.{table} SET {column} = %s"
            assert _check_violated(conn, update, (value,)) == expected, (table, column, value)
        result = "UPDATE df.nodes SET status = %s, result = '1'"
        assert _check_violated(conn, result, ("completed",)) is None
        assert _check_violated(conn, result, ("running",)) == "nodes_result_status_chk"
        conn.rollback()
