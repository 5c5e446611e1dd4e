"""The catalog installs from the numbered migrations, idempotently, under a lock."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg

from engine.migrations import load_migrations, migrate
from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database


def test_migrating_twice_and_concurrently_gives_one_version(cluster: Cluster) -> None:
    dsn = create_database(cluster, "df_migrate_twice")

    async def run() -> list[int]:
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        try:
            return list(await asyncio.gather(*(migrate(c) for c in conns)))
        finally:
            for conn in conns:
                await conn.close()

    expected = load_migrations()[-1].version
    assert asyncio.run(run()) == [expected] * 3
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version FROM df._migrations ORDER BY 1").fetchall()
        assert [r[0] for r in rows] == list(range(1, expected + 1))
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
    """The per-step engine rows have no foreign key to df.instances (0015): triggers remove
    them with their instance, on DELETE and on TRUNCATE ... CASCADE."""
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
