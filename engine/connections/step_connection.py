"""One step connection and what the engine keeps about it: its prepared statements, whether
its last COMMIT also began the next step's transaction, and the protocol in front of
asyncpg's that sends the engine's own requests pipelined and meters a step's reply
(engine/connections/step_wire.py).

This state lived in module-level weak dictionaries keyed by the asyncpg connection; it is
the connection's own, and goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.connections.step_wire import (
    SYNC,
    FlightResult,
    StepWire,
    call,
    close_statement,
    parse,
    query,
)
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
    "complete_held_or_record",  # sent with the COMMIT, unanswered until it is answered
    "apply_first_or_refuse",
    "first_still_due",  # sent ahead of a first step's statement, unanswered
    "leased_or_refuse",  # sent with the last step's COMMIT, ahead of this step's statement
)
# df._step_guard_or_refuse's refusals, by SQLSTATE
GUARD_REFUSALS = {"42704": "gone", "42501": "a superuser"}


@functools.cache
def _begin_message(allow_superuser: bool) -> bytes:
    """The BEGIN sent ahead of a step's statement, as a message (the same for every step)."""
    allowed = "true" if allow_superuser else "false"
    return query(q("begin_step_or_refuse").replace("$1", allowed))


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


@dataclass(slots=True)
class Ahead:
    """The next step's BEGIN and statement, sent in the flight of this step's COMMIT
    (StepConnection.commit_with_next): `opening` answers the BEGIN and the checks that go
    with it, `execution` the statement (its result document)."""

    sql: str
    opening: asyncio.Future[FlightResult]
    execution: asyncio.Future[str]


class StepConnection:
    """An asyncpg connection logged in as a step's owner, with its per-connection state."""

    __slots__ = (
        "ahead",
        "allow_superuser",
        "begun",
        "bookkeeping",
        "conn",
        "idle_timer",
        "limit",
        "opening",
        "refusal",
        "reset_on_commit",
        "split",
        "statements",
        "wire",
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
        self.bookkeeping = False  # the engine's statements are prepared here (by name)
        self.begun = False  # its last round trip also began the next step's transaction
        self.reset_on_commit = False  # its session was reset in its step's transaction
        self.limit = DEFAULT_MAX_RESULT_BYTES  # a step's result document, in bytes
        # between the transport and asyncpg: the engine's flights, the meter, the status
        transport = conn._transport  # type: ignore[attr-defined]
        self.wire = StepWire(conn._protocol, transport)  # type: ignore[attr-defined]
        transport.set_protocol(self.wire)
        # the BEGIN sent ahead of this step's statement, its answer not yet read (begin)
        self.opening: asyncio.Future[FlightResult] | None = None
        # the next step's BEGIN and statement, sent with the last COMMIT (commit_with_next)
        self.ahead: Ahead | None = None

    def limit_results(self, limit: int) -> None:
        """Steps run here fail when their result document passes `limit` bytes."""
        self.limit = limit

    def in_transaction(self) -> bool:
        """Is the session in a transaction block, or will it be once the BEGIN sent ahead
        of the statement is answered?"""
        return self.opening is not None or self.ahead is not None or self.wire.in_transaction

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

    def begin(self) -> None:
        """Begin a step's transaction (unless the last step's COMMIT began it), its owner
        checked in the same round trip as the statement that follows unanswered
        (df._step_guard_or_refuse; opened() reads the answer). OwnerNotAllowed at once when
        the COMMIT that began it found the owner gone or a superuser (the caller rolls
        back). A BEGIN sent with the last COMMIT (commit_with_next) is this step's, its
        answer read as any other's. In the catalog's database only."""
        if self.ahead is not None:
            self.opening = self.ahead.opening
            return
        if self.begun:
            self.begun = False
            refusal, self.refusal = self.refusal, None
            if refusal is not None:
                raise OwnerNotAllowed(refusal)
            return
        self.opening = self.wire.send_before([_begin_message(self.allow_superuser)], syncs=1)

    async def opened(self, failure: BaseException | None = None) -> None:
        """Read the answer to the BEGIN sent ahead of the statement: OwnerNotAllowed when
        the owner may not run a step, the BEGIN's own error when it failed (the error of
        the statement after it, `failure`, then only says that the transaction was
        aborted)."""
        opening, self.opening = self.opening, None
        if opening is None:
            return
        error = (await opening).error
        if error is None:
            return
        state = getattr(error, "sqlstate", None)
        message = str(error)
        if state in GUARD_REFUSALS and message.startswith("pgdurable: the step's owner is"):
            check = OwnerCheck.GONE if state == "42704" else OwnerCheck.SUPERUSER
            raise OwnerNotAllowed(check) from failure
        raise error from failure

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
        """Prepare the engine's own statements by name (before any step runs here), in one
        round trip; closing a statement that does not exist is no error."""
        messages = []
        for name in BOOKKEEPING:
            messages += [close_statement(name), parse(name, q(name))]
        (await self.wire.send([*messages, SYNC], syncs=1)).raise_error()
        self.bookkeeping = True

    async def finish(
        self, final: tuple[str, tuple[object, ...]] | None, then: str
    ) -> tuple[str | None, str]:
        """End a step's transaction in one round trip: the bookkeeping call `final` (name,
        arguments) sent ahead, then `then` as a simple Query through asyncpg (the session
        reset and COMMIT, maybe the next step's BEGIN), which fails without running
        anything if the call failed: the transaction is aborted. asyncpg reads the last
        answer, so its own idea of the transaction's status stays right. Returns the call's
        answer and `then`'s last command tag; raises the call's error first."""
        if final is None:
            return None, await self.conn.execute(then)
        name, arguments = final
        called = self.book_ahead(name, *arguments)
        try:
            tag = await self.conn.execute(then)
        except BaseException as exc:
            (await called).raise_error(exc)
            raise
        result = await called
        result.raise_error()
        return result.replies[0].value, tag

    def commit_with_next(
        self,
        final: tuple[str, tuple[object, ...]] | None,
        then: str,
        task: tuple[str, str, str],
        sql: str,
        execute: Callable[[], Coroutine[Any, Any, str]],
    ) -> asyncio.Future[FlightResult]:
        """End a step's transaction as finish() does, and begin the next step's, `task`
        (instance, node, lease token), in the same flight, with that step's statement
        `sql` (run by `execute`, through asyncpg) right behind it: one round trip for all.

        The next step's BEGIN checks its owner (df._step_guard_or_refuse) and that its task
        row carries its lease token (df._leased_or_refuse), so a COMMIT that did not apply
        the plan leasing it to this engine (a held state found stale, an error) leaves the
        statement failing (25P02) without running. Returns the future of the COMMIT's
        flight, the call's answer first; the next step takes the rest (`ahead`: begin(),
        take_ahead), or settle_ahead() disposes of them."""
        messages = [] if final is None else [call(final[0], final[1]), SYNC]
        committed = self.wire.send_before([*messages, query(then)], syncs=len(messages) // 2 + 1)
        check = call("leased_or_refuse", task)
        opening = self.wire.send([_begin_message(self.allow_superuser), check, SYNC], syncs=2)
        execution = asyncio.ensure_future(execute())
        execution.add_done_callback(_retrieved)  # settle_ahead may leave it unread
        self.ahead = Ahead(sql, opening, execution)
        return committed

    def take_ahead(self, sql: str) -> asyncio.Future[str] | None:
        """The answer of `sql` when it was sent with the last COMMIT (as the statement of the
        step now running here, whose BEGIN begin() took); None if it was not."""
        ahead = self.ahead
        if ahead is None or ahead.sql != sql:
            return None
        self.ahead = None
        return ahead.execution

    async def settle_ahead(self) -> bool:
        """The next step's BEGIN and statement sent with the last COMMIT, when that step
        does not run here: read their answers. True when the statement failed without
        running (the COMMIT did not apply the plan that leased its step): the session is
        left in a transaction to roll back. False when it runs: the connection is closed,
        its transaction with it."""
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            return True
        if self.opening is ahead.opening:
            self.opening = None
        if (await ahead.opening).error is None:
            self.conn.terminate()
            return False
        with contextlib.suppress(Exception):
            await ahead.execution
        return True

    def book_ahead(self, name: str, *args: object) -> asyncio.Future[FlightResult]:
        """Send a bookkeeping call ahead of the statement that follows it, unanswered (one
        round trip for both): if the call fails, the transaction is aborted and the
        statement fails without running (25P02). The future holds the call's answer."""
        return self.wire.send_before([call(name, args), SYNC], syncs=1)

    async def book(self, name: str, *args: object) -> str | None:
        """Run a bookkeeping statement prepared at connect time (prepare_bookkeeping):
        its first value, as text."""
        result = await self.wire.send([call(name, args), SYNC], syncs=1)
        result.raise_error()
        return result.replies[0].value if result.replies else None


def _retrieved(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()
