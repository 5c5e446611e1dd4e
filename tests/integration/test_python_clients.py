"""psycopg 3 and asyncpg through pgdurable behave exactly as with a direct connection."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest
from psycopg import sql

from tests.support.proxy import ProxyProcess


def test_psycopg_pipeline_mode(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pipe_t (id int, v text)")
        conn.execute("TRUNCATE pipe_t")
        with conn.pipeline():
            for i in range(50):
                conn.execute("INSERT INTO pipe_t VALUES (%s, %s)", (i, f"v{i}"))
            cur = conn.execute("SELECT count(*), sum(id) FROM pipe_t")
        assert cur.fetchone() == (50, sum(range(50)))


def test_psycopg_error_mid_pipeline(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT 1/0")
            conn.execute("SELECT 2")
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)


def test_psycopg_binary_results_and_prepare_threshold(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), prepare_threshold=2) as conn:
        for i in range(8):  # crosses the threshold into a named prepared statement
            cur = conn.cursor(binary=True)
            row = cur.execute(
                "SELECT %s::int8 * 2, %s::numeric, now()::date, %s::bytea, ARRAY[%s::int4, 7]",
                (i, f"{i}.5", b"\x00\xff" * i, i),
            ).fetchone()
            assert row is not None
            assert row[0] == 2 * i and str(row[1]) == f"{i}.5" and row[3] == b"\x00\xff" * i
            assert row[4] == [i, 7]
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert prepared is not None and prepared[0] >= 1


def test_psycopg_copy_in_and_out(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS copy_t (id int, note text)")
        conn.execute("TRUNCATE copy_t")
        with conn.cursor().copy("COPY copy_t FROM STDIN") as copy:
            for i in range(10_000):
                # a CopyData body mentioning df. must never be taken for SQL
                copy.write_row((i, f"SELECT df.start('x') {i}"))
        out = bytearray()
        with conn.cursor().copy("COPY copy_t TO STDOUT") as copy:
            for chunk in copy:
                out += chunk
        assert out.count(b"\n") == 10_000
        assert conn.execute("SELECT count(*) FROM copy_t").fetchone() == (10_000,)


def test_psycopg_notice_and_listen_notify(proxy: ProxyProcess) -> None:
    notices: list[str] = []
    with (
        psycopg.connect(proxy.dsn(), autocommit=True) as listener,
        psycopg.connect(proxy.dsn(), autocommit=True) as sender,
    ):
        listener.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        listener.execute("DO $$BEGIN RAISE NOTICE 'hello notice'; END$$")
        listener.execute("LISTEN relay_chan")
        sender.execute("NOTIFY relay_chan, 'payload-1'")
        received = next(listener.notifies(timeout=10, stop_after=1))
        assert received.channel == "relay_chan" and received.payload == "payload-1"
    assert notices == ["hello notice"]


def test_psycopg_cancel(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        loop_conn = conn

        def cancel_soon() -> None:
            import time

            time.sleep(0.5)
            loop_conn.cancel_safe()

        import threading

        thread = threading.Thread(target=cancel_soon)
        thread.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        thread.join()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_transactions(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn()) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS tx_t (id int)")
        conn.commit()
        conn.execute("INSERT INTO tx_t VALUES (1)")
        conn.rollback()
        conn.execute(sql.SQL("INSERT INTO {} VALUES (2)").format(sql.Identifier("tx_t")))
        conn.commit()
        assert conn.execute("SELECT array_agg(id) FROM tx_t").fetchone() == ([2],)
        conn.execute("DROP TABLE tx_t")
        conn.commit()


async def test_asyncpg_prepared_and_binary_codecs(proxy: ProxyProcess) -> None:
    conn = await asyncpg.connect(proxy.dsn())
    try:
        stmt = await conn.prepare(
            "SELECT $1::int4 + 1, $2::text, $3::jsonb, $4::uuid, $5::float8[]"
        )
        import uuid

        ident = uuid.uuid4()
        for i in range(5):
            row = await stmt.fetchrow(i, "t" * i, '{"a": 1}', ident, [1.5, float(i)])
            assert row is not None
            assert tuple(row) == (i + 1, "t" * i, '{"a": 1}', ident, [1.5, float(i)])
        assert await conn.fetchval("SELECT $1::numeric * 2", 21) == 42
    finally:
        await conn.close()


async def test_asyncpg_executemany_and_copy_records(proxy: ProxyProcess) -> None:
    conn = await asyncpg.connect(proxy.dsn())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS many_t (id int, name text)")
        await conn.execute("TRUNCATE many_t")
        await conn.executemany(
            "INSERT INTO many_t VALUES ($1, $2)", [(i, f"n{i}") for i in range(500)]
        )
        copied = await conn.copy_records_to_table(
            "many_t", records=[(1000 + i, "df.copied") for i in range(2000)]
        )
        assert copied == "COPY 2000"
        assert await conn.fetchval("SELECT count(*) FROM many_t") == 2500
    finally:
        await conn.close()


async def test_asyncpg_cancellation_via_timeout(proxy: ProxyProcess) -> None:
    conn = await asyncpg.connect(proxy.dsn())
    try:
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.5)
        assert await conn.fetchval("SELECT 'alive'") == "alive"
    finally:
        await conn.close()


async def test_asyncpg_error_then_continue(proxy: ProxyProcess) -> None:
    conn = await asyncpg.connect(proxy.dsn())
    try:
        with pytest.raises(asyncpg.exceptions.UndefinedTableError):
            await conn.fetch("SELECT * FROM no_such_table_here")
        async with conn.transaction():
            assert await conn.fetchval("SELECT 3") == 3
    finally:
        await conn.close()


def test_create_extension_pg_durable_tag_over_the_extended_protocol(proxy: ProxyProcess) -> None:
    """Prepared (executed again and again), and in a pipeline with a DO of the user's own."""
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        for _ in range(3):
            cur = conn.execute("CREATE EXTENSION pg_durable", prepare=True)
            assert cur.statusmessage == "CREATE EXTENSION"
        with conn.pipeline():
            big = conn.execute("SELECT repeat('x', 1000000)")
            created = conn.execute("CREATE EXTENSION IF NOT EXISTS pg_durable", prepare=False)
            done = conn.execute("DO $$BEGIN RAISE NOTICE 'mine'; END$$")
        assert big.fetchone() == ("x" * 1_000_000,)
        assert (created.statusmessage, done.statusmessage) == ("CREATE EXTENSION", "DO")
        assert notices == ["mine"]
