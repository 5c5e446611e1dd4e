"""The engine's pipelined requests on a step connection (engine/connections/step_wire.py),
against a real PostgreSQL: what an error in the middle of a flight skips, a BEGIN sent
ahead of a statement without waiting, and asyncpg going on undisturbed after flights."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from engine.connections.step_connection import StepConnection
from engine.connections.step_wire import SYNC, call, parse, query
from engine.executors.step_rows import fetch_document
from pgdurable_proxy.cluster import Cluster

TABLE = "step_wire_rows"


def _run(cluster: Cluster, body: Callable[[StepConnection], Awaitable[None]]) -> None:
    async def main() -> None:
        step = StepConnection(await asyncpg.connect(cluster.dsn()))
        try:
            await step.conn.execute(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (n int)")
            await body(step)
        finally:
            await step.conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await step.conn.close()

    asyncio.run(main())


async def _rows(step: StepConnection) -> list[int]:
    return [r["n"] for r in await step.conn.fetch(f"SELECT n FROM {TABLE} ORDER BY n")]


def test_an_error_mid_flight_commits_nothing_and_the_connection_goes_on(cluster: Cluster) -> None:
    async def body(step: StepConnection) -> None:
        wire = step.wire
        await wire.send([parse("divide", "SELECT 10 / $1::int"), SYNC], syncs=1)
        await step.conn.execute(f"BEGIN; INSERT INTO {TABLE} VALUES (1)")
        fine = await wire.send([call("divide", (5,)), SYNC, query("SELECT 7")], syncs=2)
        assert fine.error is None
        assert [(r.tag, r.value) for r in fine.replies] == [("SELECT 1", "2"), ("SELECT 1", "7")]
        assert wire.in_transaction
        # the call fails: the Query after its Sync runs in an aborted transaction, so the
        # INSERT and the COMMIT in it do nothing
        failed = await wire.send(
            [call("divide", (0,)), SYNC, query(f"INSERT INTO {TABLE} VALUES (2); COMMIT")],
            syncs=2,
        )
        assert isinstance(failed.error, asyncpg.DivisionByZeroError)
        assert failed.status == b"E"[0] and wire.in_transaction
        await step.conn.execute("ROLLBACK")
        assert not wire.in_transaction
        assert await _rows(step) == []
        # a failing statement inside a simple Query ends it: nothing after it runs
        await step.conn.execute("BEGIN")
        ended = await wire.send(
            [query(f"INSERT INTO {TABLE} VALUES (3); SELECT 1/0; COMMIT")], syncs=1
        )
        assert isinstance(ended.error, asyncpg.DivisionByZeroError)
        assert [r.tag for r in ended.replies] == ["INSERT 0 1"]
        await step.conn.execute("ROLLBACK")
        # and a flight that commits does commit
        done = await wire.send([query(f"BEGIN; INSERT INTO {TABLE} VALUES (4); COMMIT")], 1)
        assert done.error is None and not wire.in_transaction
        assert await _rows(step) == [4]

    _run(cluster, body)


def test_a_statement_after_a_failed_begin_sent_ahead_never_runs(cluster: Cluster) -> None:
    async def body(step: StepConnection) -> None:
        wire = step.wire
        opening = wire.send_before([query("BEGIN; SELECT 1/0")], syncs=1)
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            await step.conn.execute(f"INSERT INTO {TABLE} VALUES (1)")
        assert isinstance((await opening).error, asyncpg.DivisionByZeroError)
        assert wire.in_transaction
        await step.conn.execute("ROLLBACK")
        # the same ahead of an extended-protocol statement with rows, which it answers
        opening = wire.send_before([query("BEGIN")], syncs=1)
        rows = await step.conn.fetch(f"INSERT INTO {TABLE} VALUES (5), (6) RETURNING n")
        assert (await opening).error is None
        assert [r["n"] for r in rows] == [5, 6] and wire.in_transaction
        await step.conn.execute("COMMIT")
        assert await _rows(step) == [5, 6]

    _run(cluster, body)


def test_a_statement_that_cannot_run_in_a_transaction_block_fails_after_a_begin_ahead(
    cluster: Cluster,
) -> None:
    async def body(step: StepConnection) -> None:
        opening = step.wire.send_before([query("BEGIN")], syncs=1)
        with pytest.raises(asyncpg.ActiveSQLTransactionError):
            await step.conn.execute(f"VACUUM {TABLE}")
        assert (await opening).error is None
        await step.conn.execute("ROLLBACK")
        await step.conn.execute(f"VACUUM {TABLE}")  # in autocommit mode it runs
        assert not step.wire.in_transaction

    _run(cluster, body)


def test_a_flight_on_a_connection_that_died_fails_as_a_lost_connection(cluster: Cluster) -> None:
    async def body(step: StepConnection) -> None:
        async with asyncpg.create_pool(cluster.dsn(), min_size=1, max_size=1) as pool:
            pid = step.conn.get_server_pid()
            await pool.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(100):  # until the transport saw the end
            if step.conn.is_closed():
                break
            result = await step.wire.send([query("SELECT 1")], syncs=1)
            if result.error is not None:
                break
            await asyncio.sleep(0.01)
        result = await step.wire.send([query("SELECT 1")], syncs=1)
        assert isinstance(result.error, asyncpg.ConnectionDoesNotExistError)
        step.conn = await asyncpg.connect(cluster.dsn())  # for the clean-up

    _run(cluster, body)


def test_a_statement_answers_once_its_rows_come_not_while_it_runs(cluster: Cluster) -> None:
    """A new instance's first step is promoted only while PostgreSQL has not begun to answer
    its statement (engine/executors/first_step.py): neither the engine's own flights nor
    asyncpg's prepare round trip count as the statement answering."""

    async def body(step: StepConnection) -> None:
        wire = step.wire
        await wire.send([query("SELECT repeat('x', 1000)")], syncs=1)
        stmt = await step.prepare("SELECT pg_sleep(0.3)::text AS s")
        assert not wire.answering
        opening = wire.send_before([query("BEGIN")], syncs=1)
        reading = asyncio.ensure_future(fetch_document(step, stmt, [("s", "text")]))
        await opening
        await asyncio.sleep(0.1)
        assert not reading.done() and not wire.answering  # still running: nothing heard
        assert json.loads(await reading) == {"rows": [{"s": ""}], "row_count": 1}
        assert not wire.answering
        await step.conn.execute("ROLLBACK")

    _run(cluster, body)
