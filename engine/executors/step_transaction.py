"""A step's transaction on its owner's connection: begun ahead of its statement (or by the
previous step's COMMIT), ended by one flight that records the step, resets the session and
commits, and may begin the next step's transaction and carry its statement."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from engine.connections.step_connection import StepConnection
from engine.executors.statements import run_statement
from engine.planner.held import Planned
from engine.planner.plan import PlannedTask
from engine.queries import q
from engine.records import Task


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
    began: str | None = None  # the guard's tag, when the COMMIT began the next transaction
    try:
        step.begin()
        try:
            yield ending
            then = q("reset_step_session") + " COMMIT;"
            if ending.next is not None:
                ending.answer = await _commit_with_next(step, ending.final, then, ending.next)
            elif ending.begin_next:
                ending.answer, began = await step.finish(ending.final, then + " " + q("begin_step"))
            else:
                ending.answer, _ = await step.finish(ending.final, then)
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
    if began is not None:
        step.began_next(began)


async def _commit_with_next(
    step: StepConnection,
    final: tuple[str, tuple[object, ...]] | None,
    then: str,
    following: NextStatement,
) -> str | None:
    """finish(), with the next step's BEGIN and statement in the same flight (see
    StepConnection.commit_with_next): the call's answer."""
    await step.opened()  # this step's own BEGIN, answered with its statement
    sql = following.sql
    committed = await step.commit_with_next(
        final, then, following.task, sql, lambda: run_statement(step, sql)
    )
    committed.raise_error()
    return committed.replies[0].value if final is not None else None
