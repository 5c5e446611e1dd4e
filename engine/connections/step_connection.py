"""One step connection and what the engine keeps about it: its prepared statements, whether
its last COMMIT also began the next step's transaction, and the meter on its transport.

This state lived in module-level weak dictionaries keyed by the asyncpg connection; it is
the connection's own, and goes with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from engine.queries import q
from engine.settings import DEFAULT_MAX_RESULT_BYTES, StatementSplitter

STATEMENT_CACHE_SIZE = 64  # prepared step statements kept per step connection
# The engine's own statements on a step connection in the catalog's database, prepared
# before any step runs there. A step may leave its role changed (RESET ROLE, SET ROLE NONE:
# a runner has none of its owner's privileges), and a statement parsed after that could not
# even name schema df; one prepared before runs (its functions are SECURITY DEFINER and
# check the lease token or the login role, not the current role).
BOOKKEEPING = (
    "complete_held",
    "complete_and_load",
    "apply_as_step",
    "complete_step",
    "apply_first",
)


class Meter(asyncio.Protocol):
    """Between a step connection's transport and asyncpg's protocol: counts the bytes read
    while armed (`budget` set) and closes the connection instead of passing on more
    (engine/executors/step_rows.py)."""

    def __init__(self, inner: Any, transport: Any) -> None:
        self.inner = inner
        self.transport = transport
        self.budget: int | None = None
        self.exceeded = False

    def arm(self, budget: int) -> None:
        self.budget, self.exceeded = budget, False

    def data_received(self, data: bytes) -> None:
        if self.budget is not None:
            self.budget -= len(data)
            if self.budget < 0:
                self.budget, self.exceeded = None, True
                self.transport.abort()  # asyncpg's pending call fails: the connection died
                return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received()) if hasattr(self.inner, "eof_received") else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class StepConnection:
    """An asyncpg connection logged in as a step's owner, with its per-connection state."""

    __slots__ = (
        "begun",
        "bookkeeping",
        "conn",
        "limit",
        "meter",
        "reset_on_commit",
        "split",
        "statements",
    )

    def __init__(self, conn: asyncpg.Connection, split: StatementSplitter | None = None) -> None:
        self.conn = conn
        self.split = split  # a step text's statements, when it has several
        # step statements prepared on it, by text (most recently used last): a workflow's
        # steps repeat, and preparing is a round trip of its own
        self.statements: dict[str, asyncpg.prepared_stmt.PreparedStatement] = {}
        self.bookkeeping: dict[str, asyncpg.prepared_stmt.PreparedStatement] | None = None
        self.begun = False  # its last round trip also began the next step's transaction
        self.reset_on_commit = False  # its session was reset in its step's transaction
        self.limit = DEFAULT_MAX_RESULT_BYTES  # a step's result document, in bytes
        self.meter: Meter | None = None

    def limit_results(self, limit: int) -> None:
        """Steps run here fail when their result document passes `limit` bytes."""
        transport = self.conn._transport  # type: ignore[attr-defined]
        self.meter = Meter(self.conn._protocol, transport)  # type: ignore[attr-defined]
        transport.set_protocol(self.meter)
        self.limit = limit

    async def prepare(self, sql: str) -> asyncpg.prepared_stmt.PreparedStatement:
        """`sql` prepared on this connection (cached, least recently used dropped)."""
        cache = self.statements
        stmt = cache.pop(sql, None)
        if stmt is None:
            stmt = await self.conn.prepare(sql)
            if len(cache) >= STATEMENT_CACHE_SIZE:
                del cache[next(iter(cache))]
        cache[sql] = stmt
        return stmt

    def forget_statements(self) -> None:
        self.statements = {}

    async def prepare_bookkeeping(self) -> None:
        """Prepare the engine's own statements (before any step runs here)."""
        self.bookkeeping = {name: await self.conn.prepare(q(name)) for name in BOOKKEEPING}

    async def book(self, name: str, *args: object) -> Any:
        """Run a bookkeeping statement, prepared at connect time when it was."""
        statement = None if self.bookkeeping is None else self.bookkeeping.get(name)
        if statement is None:
            return await self.conn.fetchval(q(name), *args)
        return await statement.fetchval(*args)
