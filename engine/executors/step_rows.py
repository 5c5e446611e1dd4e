"""Read a step's rows a chunk at a time into its result document, within --max-result-bytes.

`PreparedStatement.fetch()` would hold every row of a step (then their conversion, then
the JSON text) before anything could be measured: a 500 MB result cost gigabytes. Inside
the step's transaction the statement runs through a portal instead, a chunk of about
CHUNK_BYTES at a time, each row converted to its JSON as it arrives and counted, so the
step fails as soon as its document passes the limit, having held about one chunk besides.

The portal is bound and executed through asyncpg's protocol, as its Cursor does inside,
so the first chunk costs the same single round trip as fetch() (the public Cursor binds in
a round trip of its own, and refuses to run while asyncpg believes no transaction is open:
it does not see the BEGIN the engine sent ahead, engine/connections/step_wire.py); the
portal is not closed, the step's COMMIT (and the session reset's CLOSE ALL) closes it.

A row arrives whole, and a single value may be anything up to PostgreSQL's 1 GB, so the
bytes themselves are counted too: a step connection's transport passes what it reads
through a meter (engine/connections/step_wire.py), which closes the connection once
a step's reply passes WIRE_FACTOR times the limit (no document within the limit is that
large on the wire: binary int8, the densest case, takes 12 bytes for the 6 of `"c":1,`).
The step then fails as too large, its transaction gone with the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.connections.step_connection import StepConnection
from engine.errors import ResultTooLarge
from engine.executors.results import RowsDocument
from engine.settings import MIB

CHUNK_BYTES = MIB  # rows asked for per round trip, judging by those read so far
WIRE_FACTOR = 3  # a reply this many times the limit (plus a chunk) cannot fit in it


async def fetch_document(
    step: StepConnection,
    stmt: asyncpg.prepared_stmt.PreparedStatement,
    columns: Sequence[tuple[str, str]],
) -> str:
    """Run `stmt` and return its rows as pg_durable's result document (ResultTooLarge when
    it would pass the connection's limit)."""
    conn, limit, meter = step.conn, step.limit, step.wire
    document = RowsDocument(columns, limit)
    meter.arm(WIRE_FACTOR * limit + CHUNK_BYTES)
    try:
        return await _read(conn, stmt, document, limit, step.in_transaction())
    except Exception as exc:  # the connection died (08003): did the meter close it?
        if meter.exceeded:
            raise ResultTooLarge(limit) from exc
        raise
    finally:
        meter.budget = None


async def _read(
    conn: asyncpg.Connection,
    stmt: asyncpg.prepared_stmt.PreparedStatement,
    document: RowsDocument,
    limit: int,
    in_transaction: bool,
) -> str:
    if not in_transaction:  # a statement that cannot run in a transaction block
        document.add(await stmt.fetch())  # (VACUUM, CREATE DATABASE, ...): no portal
        return document.text()
    chunk = min(CHUNK_BYTES, max(1, limit // 4))
    protocol: Any = conn._protocol  # type: ignore[attr-defined]
    state: Any = stmt._state  # type: ignore[attr-defined]
    portal = conn._get_unique_id("portal")  # type: ignore[attr-defined]
    rows, _, exhausted = await protocol.bind_execute(
        state, [], portal, document.rows_per_fetch(chunk), True, None
    )
    document.add(rows)
    while not exhausted:
        rows, _, exhausted = await protocol.execute(
            state, portal, document.rows_per_fetch(chunk), True, None
        )
        document.add(rows)
    return document.text()
