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
