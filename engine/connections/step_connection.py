"""One step connection and what the engine keeps about it: its prepared statements, whether
its last COMMIT also began the next step's transaction, and the meter on its transport.

This state lived in module-level weak dictionaries keyed by the asyncpg connection; it is
the connection's own, and goes with it.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import asyncpg

from engine.errors import OwnerRefused, StepFailed
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


class OwnerCheck(enum.Enum):
    """What df._step_guard (or step_guard_elsewhere) says of a step connection's owner."""

    ALLOWED = "allowed"
    SUPERUSER = "a superuser"
    GONE = "gone"

    @classmethod
    def from_tag(cls, tag: str) -> OwnerCheck:
        """The verdict a guard's command tag counts (SELECT 2, 1 or 0 rows)."""
        rows = int(tag.rsplit(" ", 1)[-1])
        return cls.ALLOWED if rows >= 2 else cls.SUPERUSER if rows == 1 else cls.GONE


class OwnerNotAllowed(StepFailed):
    """The step's owner may not run it: its role is gone, or a superuser (the caller says
    so in pg_durable's words, with the instance: message_for)."""

    def __init__(self, check: OwnerCheck) -> None:
        super().__init__(f"the step's owner is {check.value}", OwnerRefused.sqlstate)
        self.check = check

    def message_for(self, instance_id: str, role: str) -> str:
        if self.check is OwnerCheck.GONE:
            return str(OwnerRefused.gone(instance_id))
        return str(OwnerRefused.superuser(instance_id, role))


class StepConnection:
    """An asyncpg connection logged in as a step's owner, with its per-connection state."""

    __slots__ = (
        "allow_superuser",
        "begun",
        "bookkeeping",
        "conn",
        "idle_timer",
        "limit",
        "meter",
        "refusal",
        "reset_on_commit",
        "split",
        "statements",
    )

    def __init__(
        self,
        conn: asyncpg.Connection,
        allow_superuser: bool = False,
        split: StatementSplitter | None = None,
    ) -> None:
        self.conn = conn
        self.allow_superuser = allow_superuser  # --enable-superuser-instances
        self.split = split  # a step text's statements, when it has several
        # the guard's verdict from the COMMIT that also began this transaction (see begin)
        self.refusal: OwnerCheck | None = None
        self.idle_timer: asyncio.TimerHandle | None = None  # closes it while pooled
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

    def verdict(self, tag: str) -> OwnerCheck | None:
        """The refusal a guard's command tag says; None: the owner may run a step."""
        check = OwnerCheck.from_tag(tag)
        if check is OwnerCheck.ALLOWED or (check is OwnerCheck.SUPERUSER and self.allow_superuser):
            return None
        return check

    async def begin(self) -> None:
        """Begin a step's transaction (unless the last step's COMMIT began it), with its
        owner checked in the same round trip (df._step_guard): OwnerNotAllowed when its
        role is gone or now a superuser (the caller rolls back). In the catalog's database
        only."""
        if self.begun:
            self.begun = False
            refusal, self.refusal = self.refusal, None
        else:
            refusal = self.verdict(await self.conn.execute(q("begin_step")))
        if refusal is not None:
            raise OwnerNotAllowed(refusal)

    def began_next(self, tag: str) -> None:
        """The last step's COMMIT also began the next step's transaction and checked its
        owner (`tag`: the guard's): the next step runs here, or fails in begin()."""
        self.begun = True
        self.refusal = self.verdict(tag)

    async def check_owner(self) -> None:
        """Check the owner before a step outside the catalog's database (no df there: a
        round trip of its own); OwnerNotAllowed when it may not run one."""
        refusal = self.verdict(await self.conn.execute(q("step_guard_elsewhere")))
        if refusal is not None:
            raise OwnerNotAllowed(refusal)

    async def prepare_bookkeeping(self) -> None:
        """Prepare the engine's own statements (before any step runs here)."""
        self.bookkeeping = {name: await self.conn.prepare(q(name)) for name in BOOKKEEPING}

    async def book(self, name: str, *args: object) -> Any:
        """Run a bookkeeping statement, prepared at connect time when it was."""
        statement = None if self.bookkeeping is None else self.bookkeeping.get(name)
        if statement is None:
            return await self.conn.fetchval(q(name), *args)
        return await statement.fetchval(*args)
