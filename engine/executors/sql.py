"""How an SQL step runs: as its owner, exactly once where PostgreSQL allows it (§6.2).

The step's statement and its record commit in one transaction on a connection that logged
in as the instance's owner; in the catalog's database the instance is advanced in that
transaction too (planned by the engine's advance.InStep, see run_sql_step), and the COMMIT
may also begin the next step's transaction on the same connection (chaining, or handing
the connection over to another step of the owner); when that step is the instance's own,
its statement goes in the same flight, behind a check that the COMMIT leased it
(StepConnection.commit_with_next): one round trip per chained step. A new instance's
first advance and first step share one transaction (run_first_step). Statements that
cannot run in a transaction block, and steps whose statements begin or end transactions,
are re-run in autocommit mode and recorded afterwards: at-least-once, and
df.instance_nodes says so through the node's delivery.

A step of several statements (pg_durable's result is the last one's) runs those before the
last as one simple query and the last one prepared, for its rows, in the step's transaction
(_execute); the text is split by the connection's splitter (PostgreSQL's parser, from
dsl), only when it holds a ';' and was never prepared whole.

The functions here return what happened (StepOutcome, FirstResult); what to do next (start
the next step on the kept connection, hand it over, release it) is the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from engine.connections.outage import connection_lost
from engine.connections.step_connection import OwnerNotAllowed, StepConnection
from engine.connections.step_wire import FlightResult
from engine.errors import (
    ResultTooLarge,
    StepFailed,
    StepNotRun,
    UnsupportedColumn,
    sql_step_failed,
)
from engine.executors.results import check_columns
from engine.executors.step_rows import fetch_document
from engine.planner.held import Planned
from engine.planner.plan import PlannedTask
from engine.queries import q
from engine.records import Task

log = logging.getLogger("pgdurable.steps")
ACTIVE_SQL_TRANSACTION = "25001"
HELD_PLAN_APPLIED = "applied"  # df._complete_held applied the plan made from held state
# A prepared statement that no longer fits the schema, or that the session lost: prepare again.
STALE_STATEMENT = (asyncpg.InvalidCachedStatementError, asyncpg.InvalidSQLStatementNameError)
# Seconds a first step runs before its plan is committed apart, beyond the two round trips
# to PostgreSQL that any first step takes (StepWire.round_trip: 0.1 ms on loopback, tens
# of milliseconds across regions, where promoting every first step would cost each its
# own commit and the answered path).
FIRST_STEP_PROMOTION = 0.005

Recorder = Callable[[Task, str, str], Awaitable[None]]


class _OwnTransactionNeeded(StepNotRun):
    """A step whose statements begin or end transactions (BEGIN ... COMMIT) reached a
    transaction: nothing of it ran. It runs in autocommit mode instead (_autocommit), or,
    as a new instance's first step, apart from the first transaction."""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What running an SQL step did besides recording it: `planned` is the plan applied in
    the step's own transaction (None: the instance still needs an ordinary advance);
    `began_next` says that the step's COMMIT also began the next step's transaction on
    the connection (which the engine then runs a step on, hands over, or rolls back)."""

    planned: Planned | None = None
    began_next: bool = False


NOT_ADVANCED = StepOutcome()


class InStepPlanning(Protocol):
    """Plans the instance inside a step's own transaction (advance.InStep)."""

    def from_memory(self, task: Task, raw: str) -> Planned | None:
        """The plan from the state the engine holds, with this step completed with `raw`;
        None when it holds none."""

    def from_state(self, state: str) -> Planned | None:
        """The plan from a loaded state (JSON text); None if planning failed."""

    def chains(self, planned: Planned) -> bool:
        """May the next step's transaction begin with this one's COMMIT, once `planned` is
        applied?"""

    def alone(self, planned: Planned, task: Task) -> bool:
        """Is `task` the only leaf of its instance running (so that the state the engine
        holds is very likely still exact when the step records it)?"""

    def next_step(self, planned: Planned) -> PlannedTask | None:
        """The plan's one next step, when it is an SQL step this engine runs on the
        connection of the step that applies the plan; else None."""


@dataclass(frozen=True, slots=True)
class NextStatement:
    """The next step of the instance, which this engine runs on the same connection: its
    task (instance, node, lease token) and its SQL, sent with this step's COMMIT."""

    task: tuple[str, str, str]
    sql: str


@dataclass(slots=True)
class StepEnding:
    """How a step's transaction ends: `begin_next` asks for the next step's BEGIN to go
    with this one's COMMIT (the engine runs that step on this connection right away), and
    `next`, when that step is the instance's own, for its statement to go too; `final` is
    a bookkeeping call (name, arguments) sent in the same flight as the COMMIT, without
    waiting for its answer, which step_transaction leaves in `answer`."""

    begin_next: bool = False
    next: NextStatement | None = None
    final: tuple[str, tuple[object, ...]] | None = None
    answer: str | None = None

    def chain(self, advance: InStepPlanning, instance_id: str, planned: Planned) -> None:
        """Begin the next step's transaction with the COMMIT when `planned` allows it, and
        send the next step's statement too when it is the instance's own."""
        self.begin_next = advance.chains(planned)
        after = advance.next_step(planned) if self.begin_next else None
        if after is not None and after.lease_token is not None:
            task = (instance_id, after.node_id, after.lease_token)
            self.next = NextStatement(task, after.payload or "")


@contextlib.asynccontextmanager
async def step_transaction(step: StepConnection) -> AsyncIterator[StepEnding]:
    """A step's transaction, whose last round trip resets the session and commits: one
    round trip for both (StepConnections.release then has nothing left to send), and for
    the bookkeeping call before them when the body leaves one in `final`.

    The reset comes before the COMMIT, so that the two succeed or fail together: if the
    reset fails, the step's work is rolled back like any failed statement's, never left
    committed under an error; release then resets the session on its own. A connection
    whose previous step began this transaction sends no BEGIN of its own; otherwise the
    BEGIN goes ahead of the step's statement, unanswered, with a check of the owner that
    fails the transaction if the owner may not run the step (StepConnection.begin)."""
    conn = step.conn
    ending = StepEnding()
    try:
        step.begin()
        try:
            yield ending
            then = q("reset_step_session") + " COMMIT;"
            if ending.next is not None:
                ending.answer, tag = await _commit_with_next(step, ending.final, then, ending.next)
            else:
                if ending.begin_next:
                    then += " " + q("begin_step")
                ending.answer, tag = await step.finish(ending.final, then)
        except BaseException as exc:
            await step.opened(exc)  # an owner refused, or the BEGIN's error, first
            raise
        await step.opened()
    except BaseException:
        if step.in_transaction() and await step.settle_ahead():
            try:
                await conn.execute("ROLLBACK")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                conn.terminate()  # e.g. a statement still running: never pooled
        raise
    step.reset_on_commit = True
    if ending.begin_next and ending.next is None:
        step.began_next(tag)


async def _commit_with_next(
    step: StepConnection,
    final: tuple[str, tuple[object, ...]] | None,
    then: str,
    following: NextStatement,
) -> tuple[str | None, str]:
    """finish(), with the next step's BEGIN and statement in the same flight (see
    StepConnection.commit_with_next): the call's answer, and the COMMIT's tag."""
    await step.opened()  # this step's own BEGIN, answered with its statement
    sql = following.sql
    committed = await step.commit_with_next(
        final, then, following.task, sql, lambda: _run_statement(step, sql)
    )
    committed.raise_error()
    answer = committed.replies[0].value if final is not None else None
    return answer, committed.replies[-1].tag


async def _record_and_advance(
    step: StepConnection, task: Task, raw: str, advance: InStepPlanning, held: Planned | None
) -> Planned | None:
    """Record the step and advance its instance in the step's transaction: from held state
    (`held`, planned from the state the engine holds) when the database confirms it is
    exact, else from the state loaded here. Returns the plan applied (None: not advanced
    here).

    Whatever goes wrong in planning must not undo the step: its _advance row stays, and
    the engine's ordinary advance takes over after COMMIT.
    """
    ids = (task.instance_id, task.node_id)
    if held is None:
        state = await step.book("complete_and_load", *ids, task.token, raw, "exactly-once")
    else:
        version, plan = int(held.instance["version"]), held.plan.to_json()
        state = await step.book("complete_held", *ids, task.token, raw, version, plan)
        if state == HELD_PLAN_APPLIED:
            return held
    if state is None:
        return None
    secret = json.loads(state)["apply_secret"]
    planned = advance.from_state(state)
    if planned is None:
        return None
    applied = await step.book("apply_as_step", *ids, secret, planned.plan.to_json())
    return planned if applied == "t" else None


async def _advance_in_step(
    step: StepConnection, task: Task, raw: str, advance: InStepPlanning, ending: StepEnding
) -> Planned | None:
    """The plan to apply in the step's transaction. While the step is the only one of its
    instance running, the plan made from held state goes with the COMMIT, unanswered
    (`ending.final`: one round trip for the record, the advance, the reset and the
    COMMIT); otherwise it is applied now, or the state is loaded and planned from."""
    held = advance.from_memory(task, raw)
    if held is None or not advance.alone(held, task):
        return await _record_and_advance(step, task, raw, advance, held)
    version, plan = int(held.instance["version"]), held.plan.to_json()
    ids = (task.instance_id, task.node_id)
    ending.final = ("complete_held_or_record", (*ids, task.token, raw, version, plan))
    return held


async def run_sql_step(
    step: StepConnection,
    task: Task,
    record_elsewhere: Recorder | None,
    advance: InStepPlanning | None = None,
) -> StepOutcome:
    """Execute and record one SQL step; raises StepFailed with the node's error text, or
    StepNotRun when the connection died first (its transaction died with it).

    In the catalog's database the statement and its record commit together (exactly once),
    with the instance's advance when `advance` is given. In another database
    (`df.start(..., database => ...)`) they cannot, so the result is recorded after the
    statement committed: at-least-once, as for non-transactional SQL.

    A connection that dies during the COMMIT round trip raises StepNotRun too, although
    the transaction may have committed: the engine runs the step again only if its task
    row still carries the lease token that recording the result deletes (dispatch.py,
    TaskRunner._still_leased).
    """
    try:
        return await _run_sql_step(step, task, record_elsewhere, advance)
    except OwnerNotAllowed as exc:
        raise StepFailed(exc.message_for(task.instance_id, task.owner.name), exc.sqlstate) from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, StepNotRun) or not connection_lost(exc):
            raise
        raise StepNotRun(str(exc), started=True) from exc


async def _run_sql_step(
    step: StepConnection,
    task: Task,
    record_elsewhere: Recorder | None,
    advance: InStepPlanning | None,
) -> StepOutcome:
    sql = task.payload or ""
    if record_elsewhere is not None:
        try:
            await step.check_owner()
            raw = await _execute(step, sql)
        except asyncpg.PostgresError as exc:
            raise _step_error(exc) from exc
        await record_elsewhere(task, raw, "at-least-once")
        return NOT_ADVANCED
    for fresh in (False, True):
        try:  # the step, its record and (with `advance`) its advance in one transaction
            async with step_transaction(step) as ending:
                raw = await _execute(step, sql)
                if advance is None:
                    ids = (task.instance_id, task.node_id)
                    await step.book("complete_step", *ids, task.token, raw, "exactly-once")
                    return NOT_ADVANCED
                planned = await _advance_in_step(step, task, raw, advance, ending)
                if planned is None:
                    return NOT_ADVANCED
                ending.chain(advance, task.instance_id, planned)
            if ending.final is not None and ending.answer != HELD_PLAN_APPLIED:
                # recorded only: the engine's ordinary advance takes over (and the
                # transaction the COMMIT began is rolled back when the connection is released)
                return StepOutcome(None, ending.begin_next)
            return StepOutcome(planned, ending.begin_next)
        except STALE_STATEMENT as exc:
            # a statement prepared earlier no longer fits the schema; the transaction was
            # rolled back, so running the step once more, freshly prepared, is safe
            step.forget_statements()
            if step.bookkeeping:  # the rollback undid any role change
                await step.prepare_bookkeeping()
            if fresh:
                raise sql_step_failed(_sql_error(exc), exc.sqlstate) from exc
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != ACTIVE_SQL_TRANSACTION:
                raise _step_error(exc) from exc
            break
        except _OwnTransactionNeeded:
            break
    return await _autocommit(step, task, sql)


async def _autocommit(step: StepConnection, task: Task, sql: str) -> StepOutcome:
    """A statement that cannot run in a transaction block, or statements that begin or end
    transactions: run, then recorded apart."""
    log.info("event=step_autocommit instance=%s node=%s", task.instance_id, task.node_id)
    try:
        raw = await _execute(step, sql)
        ids = (task.instance_id, task.node_id)
        await step.book("complete_step", *ids, task.token, raw, "at-least-once")
    except asyncpg.PostgresError as exc:
        raise _step_error(exc) from exc
    return NOT_ADVANCED


class FirstStep(Protocol):
    """Plans a new instance's first advance and first SQL step (advance.FirstTransaction)."""

    @property
    def advance(self) -> InStepPlanning:
        """Finishes the step once it was promoted."""

    @property
    def planned(self) -> Planned | None:
        """The last plan made (plan_first, plan_done): what the transaction applies."""

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


@dataclass(frozen=True, slots=True)
class FirstResult:
    """What run_first_step did, and the plan it applied last (APPLIED, PROMOTED_ADVANCED);
    `began_next`: the COMMIT also began the transaction of the plan's next SQL step, which
    the engine runs on this connection (as after a chained step)."""

    outcome: FirstOutcome
    planned: Planned | None = None
    began_next: bool = False


def _changed_since_read(exc: BaseException | None) -> bool:
    """df._apply_first_or_refuse (or df._first_still_due) found the instance changed: the
    step was rolled back (or never ran)."""
    return (
        isinstance(exc, asyncpg.PostgresError)
        and exc.sqlstate == "40001"
        and str(exc).startswith("pgdurable: instance ")
    )


async def run_first_step(
    step: StepConnection,
    instance_id: str,
    engine_key: uuid.UUID,
    first: FirstStep,
    state: str,
    waited: bool = False,
) -> FirstResult:
    """A new instance's first advance and first SQL step in one transaction on its owner's
    connection (the catalog's first_step.sql), planned from `state` (df._first_document, read by
    the scheduler's poll: df._apply_first applies nothing if the instance changed since).
    When the step `waited` for its slot, df._first_still_due goes ahead of the statement
    (same round trip): an instance changed meanwhile (cancelled) never runs it.
    Errors of the statement propagate, everything rolled back: the engine then runs the
    step (if promoted) or advances the instance as usual."""
    ahead: asyncio.Future[FlightResult] | None = None
    try:
        async with step_transaction(step) as ending:
            xmin, plan, task = first.plan_first(state)
            plans = [plan]
            if task is not None:
                if waited:
                    ahead = step.book_ahead("first_still_due", instance_id, engine_key, xmin)
                execution = asyncio.ensure_future(_execute(step, task.payload or ""))
                patience = FIRST_STEP_PROMOTION + 2 * step.wire.round_trip
                done, _ = await asyncio.wait({execution}, timeout=patience)
                if not done and await first.promote(xmin):
                    raw = await execution
                    held = first.advance.from_memory(task, raw)
                    planned = await _record_and_advance(step, task, raw, first.advance, held)
                    if planned is not None:
                        return FirstResult(FirstOutcome.PROMOTED_ADVANCED, planned)
                    return FirstResult(FirstOutcome.PROMOTED)
                plans = first.plan_done(task, await execution)
            together = "[" + ",".join(plans) + "]"  # applied with the COMMIT, unanswered
            ending.final = ("apply_first_or_refuse", (instance_id, engine_key, xmin, together))
            if first.planned is not None:
                ending.chain(first.advance, instance_id, first.planned)
    except (asyncpg.PostgresError, StepFailed) as exc:
        refused = ahead is not None and _changed_since_read((await ahead).error)
        if not refused and not _changed_since_read(exc):
            raise
        return FirstResult(FirstOutcome.NOTHING)
    return FirstResult(FirstOutcome.APPLIED, first.planned, ending.begin_next)


async def _execute(step: StepConnection, sql: str) -> str:
    """Run a step's SQL and return its result document (the last statement's rows): the
    answer of the statement sent with the last step's COMMIT, when it was this one."""
    ahead = step.take_ahead(sql)
    if ahead is not None:
        return await ahead
    return await _run_statement(step, sql)


async def _run_statement(step: StepConnection, sql: str) -> str:
    """Run a step's SQL: several statements split, the last one prepared (kept)."""
    several = None
    if step.split is not None and sql not in step.statements:  # prepared: one statement
        several = step.split(sql)
    if several is None:
        return await _execute_one(step, sql)
    if several.controls_transaction and step.in_transaction():
        raise _OwnTransactionNeeded("a step that begins or ends transactions runs apart")
    await step.conn.execute(several.before)  # no arguments: the simple query protocol
    # not kept prepared: it may name what the statements before it create (a temp table)
    return await _execute_one(step, several.last, prepared=False)


async def _execute_one(
    step: StepConnection, sql: str, retry: bool = True, prepared: bool = True
) -> str:
    stmt = await (step.prepare(sql) if prepared else step.conn.prepare(sql))
    parameters = stmt.get_parameters()
    if parameters:
        raise StepFailed(
            "SQL execution failed: error returned from database: bind message supplies 0 "
            f'parameters, but prepared statement "" requires {len(parameters)}',
            "08P01",
        )
    columns = [(attr.name, attr.type.name) for attr in stmt.get_attributes()]
    try:
        check_columns(columns)
    except UnsupportedColumn as exc:
        raise StepFailed(str(exc), exc.sqlstate) from exc
    try:
        return await fetch_document(step, stmt, columns)
    except ResultTooLarge as exc:
        raise StepFailed(str(exc), exc.sqlstate) from exc
    except STALE_STATEMENT:
        step.forget_statements()
        if not retry or step.in_transaction():
            raise  # run_sql_step re-runs the whole transaction
        return await _execute_one(step, sql, False, prepared)  # nothing ran: prepare afresh


def _step_error(exc: asyncpg.PostgresError) -> StepFailed | StepNotRun:
    """The step failed (an error of its SQL), or it did not run: its connection went with
    the server (57P01/57P02/57P03, class 08), which rolled its transaction back."""
    if connection_lost(exc):
        return StepNotRun(str(exc), started=True)
    return sql_step_failed(_sql_error(exc), exc.sqlstate)


def _sql_error(exc: asyncpg.PostgresError) -> str:
    return f"SQL execution failed: error returned from database: {exc}"
