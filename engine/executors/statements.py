"""A step's statements on its connection: run, their rows read into the result document,
their errors in the node's words.

A step of several statements (pg_durable's result is the last one's) runs those before the
last as one simple query and the last one prepared, for its rows, in the step's transaction
(run_statement); the text is split by the connection's splitter (PostgreSQL's parser, from
dsl), only when it holds a ';' and was never prepared whole. A statement sent with the last
step's COMMIT (StepConnection.commit_with_next) is not run again: its answer is taken
(execute).
"""

from __future__ import annotations

import asyncpg

from engine.connections.outage import connection_lost
from engine.connections.step_connection import StepConnection
from engine.errors import (
    ResultTooLarge,
    StepFailed,
    StepNotRun,
    UnsupportedColumn,
    sql_step_failed,
)
from engine.executors.results import check_columns
from engine.executors.step_rows import fetch_document

# A prepared statement that no longer fits the schema, or that the session lost: prepare again.
STALE_STATEMENT = (asyncpg.InvalidCachedStatementError, asyncpg.InvalidSQLStatementNameError)


class OwnTransactionNeeded(StepNotRun):
    """A step whose statements begin or end transactions (BEGIN ... COMMIT) reached a
    transaction: nothing of it ran. It runs in autocommit mode instead (sql._autocommit), or,
    as a new instance's first step, apart from the first transaction."""


async def execute(step: StepConnection, sql: str) -> str:
    """Run a step's SQL and return its result document (the last statement's rows): the
    answer of the statement sent with the last step's COMMIT, when it was this one."""
    ahead = step.take_ahead(sql)
    if ahead is not None:
        return await ahead
    return await run_statement(step, sql)


async def run_statement(step: StepConnection, sql: str) -> str:
    """Run a step's SQL: several statements split, the last one prepared (kept)."""
    several = None
    if step.split is not None and sql not in step.statements:  # prepared: one statement
        several = step.split(sql)
    if several is None:
        return await _execute_one(step, sql)
    if several.controls_transaction and step.in_transaction():
        raise OwnTransactionNeeded("a step that begins or ends transactions runs apart")
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


def step_error(exc: asyncpg.PostgresError) -> StepFailed | StepNotRun:
    """The step failed (an error of its SQL), or it did not run: its connection went with
    the server (57P01/57P02/57P03, class 08), which rolled its transaction back."""
    if connection_lost(exc):
        return StepNotRun(str(exc), started=True)
    return sql_step_failed(sql_error(exc), exc.sqlstate)


def sql_error(exc: asyncpg.PostgresError) -> str:
    return f"SQL execution failed: error returned from database: {exc}"
