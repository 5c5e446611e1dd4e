"""Read a step's rows a chunk at a time into its result document, within --max-result-bytes.

`PreparedStatement.fetch()` would hold every row of a step (then their conversion, then
the JSON text) before anything could be measured: a 500 MB result cost gigabytes. Inside
the step's transaction the statement runs through a portal instead, a chunk of about
CHUNK_BYTES at a time, each row converted to its JSON as it arrives and counted, so the
step fails as soon as its document passes the limit, having held about one chunk besides.

The portal is asyncpg's Cursor used through its bind-and-execute call, so the first chunk
costs the same single round trip as fetch() (the public Cursor binds in a round trip of
its own); the portal is not closed, the step's COMMIT (and the session reset's CLOSE ALL)
closes it.

A row arrives whole, and a single value may be anything up to PostgreSQL's 1 GB, so the
bytes themselves are counted too: a step connection's transport passes what it reads
through a Meter (engine/connections/step_connection.py), which closes the connection once
a step's reply passes WIRE_FACTOR times the limit (no document within the limit is that
large on the wire: binary int8, the densest case, takes 12 bytes for the 6 of `"c":1,`).
The step then fails as too large, its transaction gone with the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.cursor import Cursor

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
    conn, limit, meter = step.conn, step.limit, step.meter
    document = RowsDocument(columns, limit)
    if meter is None:
        return await _read(conn, stmt, document, limit)
    meter.arm(WIRE_FACTOR * limit + CHUNK_BYTES)
    try:
        return await _read(conn, stmt, document, limit)
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
) -> str:
    if not conn.is_in_transaction():  # a statement that cannot run in a transaction block
        document.add(await stmt.fetch())  # (VACUUM, CREATE DATABASE, ...): no portal
        return document.text()
    chunk = min(CHUNK_BYTES, max(1, limit // 4))
    portal: Any = Cursor(conn, stmt.get_query(), stmt._state, [], None)  # type: ignore[attr-defined]
    document.add(await portal._bind_exec(document.rows_per_fetch(chunk), None))
    while not portal._exhausted:
        document.add(await portal._exec(document.rows_per_fetch(chunk), None))
    return document.text()
