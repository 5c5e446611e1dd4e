"""A new instance's first advance and first SQL step, in one transaction on its owner's
connection (the catalog's first_step.sql)."""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from engine.connections.step_connection import StepConnection
from engine.connections.step_wire import FlightResult
from engine.errors import StepFailed
from engine.executors.sql import record_and_advance
from engine.executors.statements import execute
from engine.executors.step_transaction import InStepPlanning, step_transaction
from engine.planner.held import Planned
from engine.records import Task

# Seconds a first step runs before its plan is committed apart, beyond the two round trips
# to PostgreSQL that any first step takes (StepWire.round_trip, a flight's time on the
# connection: 0.1 ms on an idle loopback, tens of milliseconds across regions or on a
# saturated server, where promoting every first step would cost each its own commit and
# the answered path, adding to the load).
FIRST_STEP_PROMOTION = 0.005


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
                execution = asyncio.ensure_future(execute(step, task.payload or ""))
                patience = FIRST_STEP_PROMOTION + 2 * step.wire.round_trip
                done, _ = await asyncio.wait({execution}, timeout=patience)
                # promoted only while PostgreSQL has not begun to answer: an answer that
                # came but waits for a busy event loop is no long-running step
                if not done and not step.wire.answering and await first.promote(xmin):
                    raw = await execution
                    held = first.advance.from_memory(task, raw)
                    planned = await record_and_advance(step, task, raw, first.advance, held)
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
