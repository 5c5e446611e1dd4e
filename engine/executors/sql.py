"""Run SQL steps as their owner, exactly once where PostgreSQL allows it (§6.2, decision 3).

The step's statement and df._complete_step commit in one transaction on a connection that
logged in as the instance's owner. Statements that cannot run in a transaction block are
re-run in autocommit mode and recorded afterwards: at-least-once, and df.instance_nodes
says so through the node's delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import uuid
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from engine.connections.outage import connection_lost
from engine.connections.runners import Runners
from engine.connections.slots import StepSlots
from engine.errors import (
    EngineError,
    NoRunner,
    ResultTooLarge,
    StepFailed,
    StepNotRun,
    UnsupportedColumn,
)
from engine.executors.results import check_columns
from engine.executors.step_rows import fetch_document, limit_results
from engine.queries import q
from engine.settings import EngineSettings

log = logging.getLogger("pgdurable.steps")
ACTIVE_SQL_TRANSACTION = "25001"
STEP_SESSION_SETTINGS = {
    "df.in_workflow": "true",
    "application_name": "pg_durable:worker:workflow-sql",
}
HELD_PLAN_APPLIED = "applied"  # df._complete_held applied the plan made from held state
STATEMENT_CACHE_SIZE = 64  # prepared step statements kept per step connection
# A prepared statement that no longer fits the schema, or that the session lost: prepare again.
STALE_STATEMENT = (asyncpg.InvalidCachedStatementError, asyncpg.InvalidSQLStatementNameError)


@dataclass(frozen=True, slots=True)
class Task:
    """A claimed leaf task."""

    instance_id: str
    node_id: str
    node_type: str
    payload: str | None
    token: str
    owner: str
    database: str


class StepConnections:
    """Idle connections per (role, database), capped by a global semaphore."""

    def __init__(self, settings: EngineSettings, runners: Runners | None = None) -> None:
        self.settings = settings
        self.runners = runners
        self.slots = StepSlots(settings.max_user_connections)
        self._idle: dict[tuple[str, str], list[asyncpg.Connection]] = defaultdict(list)
        # connections (with their slots) passed from a step to the next (began_next_step)
        self.carried: set[asyncpg.Connection] = set()

    async def acquire(self, role: str, database: str) -> asyncpg.Connection:
        idle = self._idle[(role, database)]
        while idle:
            conn = idle.pop()
            if not conn.is_closed():
                return conn
        conn = await self.connect(role, database, STEP_SESSION_SETTINGS)
        limit_results(conn, self.settings.max_result_bytes)
        if database == self.settings.catalog_database:
            try:
                await _prepare_bookkeeping(conn)
            except BaseException:
                conn.terminate()
                raise
        return conn

    async def connect(
        self, role: str, database: str, server_settings: dict[str, str]
    ) -> asyncpg.Connection:
        """A new connection with exactly `role`'s privileges (outside the pool and its cap).

        Without a secret the engine logs in as the role itself (trust/peer, as pg_durable).
        With one it logs in as the role's runner with `role` as a startup option.
        """
        runners = self.runners
        if runners is None or role == self.settings.admin_user:
            return await self._login(role, None, database, server_settings, role)
        try:
            runner, password = await runners.login_for(role)
        except NoRunner as exc:
            raise StepFailed(str(exc)) from exc
        as_owner = {**server_settings, "role": role}
        try:
            return await self._login(runner, password, database, as_owner, role)
        except StepFailed as exc:
            if not _refused_login(exc):
                raise
        async with runners.resetting(runner):  # one reset per runner, not one per step
            try:  # another step may have reset the password while we waited
                return await self._login(runner, password, database, as_owner, role)
            except StepFailed as exc:
                if not _refused_login(exc):
                    raise
            try:
                await runners.reset_password(runner)
            except asyncpg.PostgresError as exc:  # e.g. df.revoke_usage dropped the runner
                runners.forget(role)
                raise StepFailed(
                    f"Failed to connect to database '{database}' as '{role}'. Error: {exc}"
                ) from exc
        return await self._login(runner, password, database, as_owner, role)

    async def _login(
        self,
        user: str,
        password: str | None,
        database: str,
        server_settings: dict[str, str],
        role: str,
    ) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                self.settings.step_dsn(user, password, database),
                timeout=30,
                server_settings=server_settings,
            )
        except TimeoutError as exc:  # the step never started: it waits and runs again
            raise StepNotRun(
                f"Connection to database '{database}' as '{role}' timed out after 30s"
            ) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            text = f"Failed to connect to database '{database}' as '{role}'. Error: {exc}"
            if connection_lost(exc):  # refused, the server starting up or shutting down
                raise StepNotRun(text) from exc
            raise StepFailed(text) from exc

    async def release(self, role: str, database: str, conn: asyncpg.Connection) -> None:
        try:
            if conn in _begun:  # carried to a next step that did not run: nothing done yet
                _begun.discard(conn)
                _reset_on_commit.discard(conn)
                await conn.execute("ROLLBACK")
            elif conn in _reset_on_commit:
                _reset_on_commit.discard(conn)
            else:
                await conn.execute(q("reset_step_session"))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()
            return
        idle = self._idle[(role, database)]
        if len(idle) < self.settings.max_user_connections:
            idle.append(conn)
        else:
            await conn.close()

    async def close(self) -> None:
        for conn in [*self.carried, *(c for conns in self._idle.values() for c in conns)]:
            conn.terminate()
        self.carried.clear()
        self._idle.clear()


Recorder = Callable[[Task, str, str], Awaitable[None]]

# Step connections whose session was reset in their step's transaction.
_reset_on_commit: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
# Step connections whose last round trip also began the next step's transaction.
_begun: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


def began_next_step(conn: asyncpg.Connection) -> bool:
    """Did the step's COMMIT also begin the transaction of the step run next on `conn`?"""
    return conn in _begun


@dataclass(slots=True)
class StepEnding:
    """How a step's transaction ends: `begin_next` asks for the next step's BEGIN to go
    with this one's COMMIT (the engine runs that step on this connection right away)."""

    begin_next: bool = False


@contextlib.asynccontextmanager
async def step_transaction(conn: asyncpg.Connection) -> AsyncIterator[StepEnding]:
    """A step's transaction, whose last round trip resets the session and commits: one
    round trip for both (StepConnections.release then has nothing left to send).

    The reset comes before the COMMIT, so that the two succeed or fail together: if the
    reset fails, the step's work is rolled back like any failed statement's, never left
    committed under an error; release then resets the session on its own. A connection
    whose previous step began this transaction sends no BEGIN of its own."""
    if conn in _begun:
        _begun.discard(conn)
    else:
        await conn.execute("BEGIN")
    ending = StepEnding()
    try:
        yield ending
        end = " COMMIT; BEGIN;" if ending.begin_next else " COMMIT;"
        await conn.execute(q("reset_step_session") + end)
    except BaseException:
        if conn.is_in_transaction():
            try:
                await conn.execute("ROLLBACK")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                conn.terminate()  # e.g. a statement still running: never pooled
        raise
    _reset_on_commit.add(conn)
    if ending.begin_next:
        _begun.add(conn)


class InStepAdvance(Protocol):
    """Plans the instance inside a step's own transaction (one commit per step)."""

    def from_memory(self, task: Task, raw: str) -> tuple[int, str] | None:
        """(version held, plan JSON) from the state the engine holds, with this step
        completed with `raw`; None when it holds none."""

    def from_state(self, state: str) -> str | None:
        """Plan JSON from a loaded state (JSON text); None if planning failed."""

    def chains(self) -> bool:
        """May the next step's transaction begin with this one's COMMIT: does the plan
        applied leave exactly one next step, an SQL step of the instance that this engine
        runs, or does another step of the owner wait for a step slot?"""


async def _record_and_advance(
    conn: asyncpg.Connection, task: Task, raw: str, advance: InStepAdvance
) -> bool:
    """Record the step and advance its instance in the step's transaction: from held state
    when the database confirms it is exact, else from the state loaded here.

    Whatever goes wrong in planning must not undo the step: its _advance row stays, and
    the engine's ordinary advance takes over after COMMIT.
    """
    held = advance.from_memory(task, raw)
    if held is None:
        state = await _book(
            conn,
            "complete_and_load",
            task.instance_id,
            task.node_id,
            task.token,
            raw,
            "exactly-once",
        )
    else:
        version, held_plan = held
        state = await _book(
            conn,
            "complete_held",
            task.instance_id,
            task.node_id,
            task.token,
            raw,
            version,
            held_plan,
        )
        if state == HELD_PLAN_APPLIED:
            return True
    if state is None:
        return False
    secret = json.loads(state)["apply_secret"]
    plan = advance.from_state(state)
    if plan is None:
        return False
    return bool(await _book(conn, "apply_as_step", task.instance_id, task.node_id, secret, plan))


async def run_sql_step(
    conn: asyncpg.Connection,
    task: Task,
    record_elsewhere: Recorder | None,
    advance: InStepAdvance | None = None,
) -> bool:
    """Execute and record one SQL step; raises StepFailed with the node's error text, or
    StepNotRun when the connection died first (its transaction died with it).

    Returns True when the instance was also advanced inside the step's transaction.

    In the catalog's database the statement and its record commit together (exactly once).
    In another database (`df.start(..., database => ...)`) they cannot, so the result is
    recorded after the statement committed: at-least-once, as for non-transactional SQL.

    A connection that dies during the COMMIT round trip raises StepNotRun too, although
    the transaction may have committed: the engine runs the step again only if its task
    row still carries the lease token that recording the result deletes (engine.py,
    _still_leased).
    """
    try:
        return await _run_sql_step(conn, task, record_elsewhere, advance)
    except (OSError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, StepNotRun) or not connection_lost(exc):
            raise
        raise StepNotRun(str(exc), started=True) from exc


async def _run_sql_step(
    conn: asyncpg.Connection,
    task: Task,
    record_elsewhere: Recorder | None,
    advance: InStepAdvance | None,
) -> bool:
    sql = task.payload or ""
    if record_elsewhere is not None:
        try:
            raw = await _execute(conn, sql)
        except asyncpg.PostgresError as exc:
            raise _step_error(exc) from exc
        await record_elsewhere(task, raw, "at-least-once")
        return False
    for fresh in (False, True):
        try:
            async with step_transaction(conn) as ending:
                raw = await _execute(conn, sql)
                if advance is not None:
                    advanced = await _record_and_advance(conn, task, raw, advance)
                    ending.begin_next = advanced and advance.chains()
                    return advanced
                await _book(
                    conn,
                    "complete_step",
                    task.instance_id,
                    task.node_id,
                    task.token,
                    raw,
                    "exactly-once",
                )
            return False
        except STALE_STATEMENT as exc:
            # a statement prepared earlier no longer fits the schema; the transaction was
            # rolled back, so running the step once more, freshly prepared, is safe
            _forget_statements(conn)
            if conn in _bookkeeping:  # the rollback undid any role change: prepare anew
                await _prepare_bookkeeping(conn)
            if fresh:
                raise StepFailed(_sql_error(exc)) from exc
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != ACTIVE_SQL_TRANSACTION:
                raise _step_error(exc) from exc
            break
    log.info("event=step_autocommit instance=%s node=%s", task.instance_id, task.node_id)
    try:
        raw = await _execute(conn, sql)
        await _book(
            conn, "complete_step", task.instance_id, task.node_id, task.token, raw, "at-least-once"
        )
    except asyncpg.PostgresError as exc:
        raise _step_error(exc) from exc
    return False


FIRST_STEP_PROMOTION = 0.005  # seconds a first step runs before its plan is committed apart


class FirstStep(Protocol):
    """Plans a new instance's first advance and first SQL step (run_first_step)."""

    @property
    def advance(self) -> InStepAdvance:
        """Finishes the step once it was promoted."""

    def plan_first(self, state: str) -> tuple[str, str, Task | None]:
        """From df._first_document's document: the version of its _advance row, the first
        plan's JSON, and the SQL step to run in this transaction (left out of the plan's
        tasks), or None to apply the plan alone."""

    def plan_done(self, task: Task, raw: str) -> list[str]:
        """The plans (JSON) to apply, in order, once `task` completed with `raw`: the
        first plan and the next, as one plan where they can be."""

    async def promote(self, advance_xmin: str) -> bool:
        """Commit the first plan, with the step's task row, elsewhere (the step runs long):
        then the step finishes as any step does. False if the instance changed."""


class FirstOutcome(enum.Enum):
    """How run_first_step ended."""

    NOTHING = "nothing applied"  # nothing to do, or the instance changed: rolled back
    APPLIED = "first plans applied"
    PROMOTED = "promoted, then recorded"  # the instance still needs an advance
    PROMOTED_ADVANCED = "promoted, then recorded and advanced"


class _NotApplied(EngineError):
    """df._apply_first found the instance changed: roll back the step's statement."""


async def run_first_step(
    conn: asyncpg.Connection,
    instance_id: str,
    engine_key: uuid.UUID,
    first: FirstStep,
    state: str,
) -> FirstOutcome:
    """A new instance's first advance and first SQL step in one transaction on its owner's
    connection (0013_first_step.sql), planned from `state` (df._first_document, read by
    the scheduler's poll: df._apply_first applies nothing if the instance changed since).
    Errors of the statement propagate, everything rolled back: the engine then runs the
    step (if promoted) or advances the instance as usual."""
    try:
        async with step_transaction(conn):
            xmin, plan, task = first.plan_first(state)
            plans = [plan]
            if task is not None:
                execution = asyncio.ensure_future(_execute(conn, task.payload or ""))
                done, _ = await asyncio.wait({execution}, timeout=FIRST_STEP_PROMOTION)
                if not done and await first.promote(xmin):
                    raw = await execution
                    if await _record_and_advance(conn, task, raw, first.advance):
                        return FirstOutcome.PROMOTED_ADVANCED
                    return FirstOutcome.PROMOTED
                plans = first.plan_done(task, await execution)
            applied = await _book(
                conn, "apply_first", instance_id, engine_key, xmin, "[" + ",".join(plans) + "]"
            )
            if not applied:
                raise _NotApplied
    except _NotApplied:
        return FirstOutcome.NOTHING
    return FirstOutcome.APPLIED


# Step statements prepared on each step connection, by text (most recently used last): a
# workflow's steps repeat, and preparing is a round trip of its own.
_prepared: weakref.WeakKeyDictionary[
    asyncpg.Connection, dict[str, asyncpg.prepared_stmt.PreparedStatement]
] = weakref.WeakKeyDictionary()


async def _prepare(conn: asyncpg.Connection, sql: str) -> asyncpg.prepared_stmt.PreparedStatement:
    cache = _prepared.setdefault(conn, {})
    stmt = cache.pop(sql, None)
    if stmt is None:
        stmt = await conn.prepare(sql)
        if len(cache) >= STATEMENT_CACHE_SIZE:
            del cache[next(iter(cache))]
    cache[sql] = stmt
    return stmt


def _forget_statements(conn: asyncpg.Connection) -> None:
    _prepared.pop(conn, None)


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
_bookkeeping: weakref.WeakKeyDictionary[
    asyncpg.Connection, dict[str, asyncpg.prepared_stmt.PreparedStatement]
] = weakref.WeakKeyDictionary()


async def _prepare_bookkeeping(conn: asyncpg.Connection) -> None:
    _bookkeeping[conn] = {name: await conn.prepare(q(name)) for name in BOOKKEEPING}


async def _book(conn: asyncpg.Connection, name: str, *args: object) -> Any:
    """Run a bookkeeping statement, prepared at connect time when it was."""
    statement = _bookkeeping.get(conn, {}).get(name)
    if statement is None:
        return await conn.fetchval(q(name), *args)
    return await statement.fetchval(*args)


async def _execute(conn: asyncpg.Connection, sql: str, retry: bool = True) -> str:
    stmt = await _prepare(conn, sql)
    parameters = stmt.get_parameters()
    if parameters:
        raise StepFailed(
            "SQL execution failed: error returned from database: bind message supplies 0 "
            f'parameters, but prepared statement "" requires {len(parameters)}'
        )
    columns = [(attr.name, attr.type.name) for attr in stmt.get_attributes()]
    try:
        check_columns(columns)
    except UnsupportedColumn as exc:
        raise StepFailed(str(exc)) from exc
    try:
        return await fetch_document(conn, stmt, columns)
    except ResultTooLarge as exc:
        raise StepFailed(str(exc)) from exc
    except STALE_STATEMENT:
        _forget_statements(conn)
        if not retry or conn.is_in_transaction():
            raise  # run_sql_step re-runs the whole transaction
        return await _execute(conn, sql, retry=False)  # nothing ran: prepare afresh


def _refused_login(exc: StepFailed) -> bool:
    """A first login, or one after the secret changed (28P01 is a subclass of 28000)."""
    return isinstance(exc.__cause__, asyncpg.InvalidAuthorizationSpecificationError)


def _step_error(exc: asyncpg.PostgresError) -> StepFailed | StepNotRun:
    """The step failed (an error of its SQL), or it did not run: its connection went with
    the server (57P01/57P02/57P03, class 08), which rolled its transaction back."""
    if connection_lost(exc):
        return StepNotRun(str(exc), started=True)
    return StepFailed(_sql_error(exc), exc.sqlstate)


def _sql_error(exc: asyncpg.PostgresError) -> str:
    return f"SQL execution failed: error returned from database: {exc}"
