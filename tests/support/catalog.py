"""A database with the df catalog installed by engine.catalog (no engine running), and the
engine's presence alone for tests that play the rest of the engine."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import psycopg

from pgdurable_proxy.cluster import Cluster

LEASE_SECONDS = 30.0  # df.start's default when no engine published its lease


def create_database(cluster: Cluster, name: str) -> str:
    """Drop and recreate a database; return its DSN (as postgres)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.dsn(dbname=name)


def database_with_role(cluster: Cluster, name: str, role: str) -> str:
    """A fresh database (create_database) and a LOGIN role (created if missing) that may
    create tables in its schema public; return the database's DSN (as postgres)."""
    dsn = create_database(cluster, name)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {role} LOGIN")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    return dsn


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


@contextmanager
def engine_presence(dsn: str) -> Iterator[None]:
    """The engine's presence (engine/presence.py) on `dsn` while the block runs, in a thread
    of its own, for tests that play the rest of the engine by hand: as an engine's boot, it
    marks the catalog initialised (_duroxide._worker_ready) and keeps a heartbeat, so
    df.start finds an engine ready."""
    from engine.catalog import catalog_version
    from engine.presence import Presence, heartbeat_interval
    from engine.queries import q

    presence = Presence(dsn, uuid.uuid4(), LEASE_SECONDS, lambda: None)

    async def boot() -> asyncio.Task[None]:
        await presence.ensure()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(q("worker_ready"), catalog_version())
        finally:
            await conn.close()
        return asyncio.create_task(beat())

    async def beat() -> None:
        while True:
            await asyncio.sleep(heartbeat_interval(LEASE_SECONDS))
            await presence.beat()

    async def stop(beating: asyncio.Task[None]) -> None:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        presence.close()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="engine-presence", daemon=True)
    thread.start()
    try:
        beating = asyncio.run_coroutine_threadsafe(boot(), loop).result(30)
        try:
            yield
        finally:
            asyncio.run_coroutine_threadsafe(stop(beating), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
