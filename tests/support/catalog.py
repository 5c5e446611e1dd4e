"""A database with the df catalog installed by engine.catalog (no engine running)."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg

from pgdurable_proxy.cluster import Cluster


def create_database(cluster: Cluster, name: str) -> str:
    """Drop and recreate a database; return its DSN (as postgres)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.dsn(dbname=name)


def install_catalog(dsn: str) -> int:
    """Run engine.catalog.migrate against `dsn`; return the version."""
    from engine.catalog import migrate

    async def run() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    return asyncio.run(run())
