"""How an SQL step runs: as its owner, exactly once where PostgreSQL allows it (§6.2).

The step's statement and its record commit in one transaction on a connection that logged
in as the instance's owner; in the catalog's database the instance is advanced in that
transaction too (planned by the engine's advance.InStep, see run_sql_step), and the COMMIT
may also begin the next step's transaction on the same connection (chaining, or handing
the connection over to another step of the owner); when that step is the instance's own,
its statement goes in the same flight, behind a check that the COMMIT leased it
(step_transaction.py): one round trip per chained step. A new instance's first advance and
first step share one transaction (first_step.py). Statements that cannot run in a
transaction block, and steps whose statements begin or end transactions, are re-run in
autocommit mode and recorded afterwards: at-least-once, and df.instance_nodes says so
through the node's delivery.

The functions here return what happened (StepOutcome); what to do next (start the next
step on the kept connection, hand it over, release it) is the engine's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from engine.connections.outage import connection_lost
from engine.connections.step_connection import OwnerNotAllowed, StepConnection
from engine.errors import StepFailed, StepNotRun, sql_step_failed
from engine.executors.statements import (
    STALE_STATEMENT,
    OwnTransactionNeeded,
    execute,
    sql_error,
    step_error,
)
from engine.executors.step_transaction import InStepPlanning, StepEnding, step_transaction
from engine.planner.held import Planned
from engine.records import Task

log = logging.getLogger("pgdurable.steps")
ACTIVE_SQL_TRANSACTION = "25001"
HELD_PLAN_APPLIED = "applied"  # df._complete_held applied the plan made from held state

Recorder = Callable[[Task, str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What running an SQL step did besides recording it: `planned` is the plan applied in
    the step's own transaction (None: the instance still needs an ordinary advance);
    `began_next` says that the step's COMMIT also began the next step's transaction on
    the connection (which the engine then runs a step on, hands over, or rolls back)."""

    planned: Planned | None = None
    began_next: bool = False


NOT_ADVANCED = StepOutcome()


async def record_and_advance(
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
        return await record_and_advance(step, task, raw, advance, held)
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
            raw = await execute(step, sql)
        except asyncpg.PostgresError as exc:
            raise step_error(exc) from exc
        await record_elsewhere(task, raw, "at-least-once")
        return NOT_ADVANCED
    for fresh in (False, True):
        try:  # the step, its record and (with `advance`) its advance in one transaction
            async with step_transaction(step) as ending:
                raw = await execute(step, sql)
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
                raise sql_step_failed(sql_error(exc), exc.sqlstate) from exc
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != ACTIVE_SQL_TRANSACTION:
                raise step_error(exc) from exc
            break
        except OwnTransactionNeeded:
            break
    return await _autocommit(step, task, sql)


async def _autocommit(step: StepConnection, task: Task, sql: str) -> StepOutcome:
    """A statement that cannot run in a transaction block, or statements that begin or end
    transactions: run, then recorded apart."""
    log.info("event=step_autocommit instance=%s node=%s", task.instance_id, task.node_id)
    try:
        raw = await execute(step, sql)
        ids = (task.instance_id, task.node_id)
        await step.book("complete_step", *ids, task.token, raw, "at-least-once")
    except asyncpg.PostgresError as exc:
        raise step_error(exc) from exc
    return NOT_ADVANCED
