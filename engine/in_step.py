"""What the engine does inside a step's own transaction (steps.InStepAdvance,
steps.FirstStep), and the bookkeeping of running steps it shares with them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.errors import StepFailed
from engine.executors.sql import Task
from engine.planner.held import Planned, Planning
from engine.queries import q

log = logging.getLogger("pgdurable.engine")


@dataclass(slots=True)
class RunningStep:
    """A leaf task this engine is executing right now."""

    task: Task
    backend_pid: int | None = None  # set only while the step's SQL is executing
    request: asyncio.Future[str] | None = None  # an HTTP step's request in flight
    leased: bool = True  # False: a first step, which has no task row (no lease to renew)


@dataclass(slots=True)
class EngineCounters:
    """What the engine did since it started (exposed on /metrics)."""

    advances_total: int = 0  # on the engine's own connections
    in_step_advances_held_total: int = 0  # in a step's transaction, from held state
    in_step_advances_loaded_total: int = 0  # in a step's transaction, from a fresh load
    first_steps_total: int = 0  # new instances advanced in their first step's transaction
    first_steps_promoted_total: int = 0  # of those tried, first plans committed apart (slow)
    chained_steps_total: int = 0  # SQL steps begun by their instance's previous COMMIT
    handed_over_steps_total: int = 0  # SQL steps begun by another instance's step's COMMIT


@dataclass(frozen=True, slots=True)
class EngineParts:
    """The parts of the engine a first transaction works with."""

    planning: Planning
    owner_id: str
    catalog_database: str
    counters: EngineCounters
    running: dict[tuple[str, str], RunningStep]
    track: Callable[[RunningStep], None]  # registers a running step
    pool: Callable[[], asyncpg.Pool]


class StepAdvance:
    """The engine's planning for one SQL step's transaction (steps.InStepAdvance)."""

    def __init__(self, planning: Planning, handover: Callable[[], bool] | None = None) -> None:
        self.planning = planning
        self.planned: list[Planned] = []  # the last one is what the transaction applied
        self.handover = handover  # does another step of the owner wait for a step slot?

    def from_memory(self, task: Task, raw: str) -> tuple[int, str] | None:
        try:
            planned = self.planning.completed_step(task.instance_id, task.node_id, raw)
        except Exception:  # a planner bug: load the state instead
            log.exception("event=held_plan_failed instance=%s", task.instance_id)
            return None
        if planned is None:
            return None
        self.planned.append(planned)
        return int(planned.instance["version"]), planned.plan.to_json()

    def from_state(self, state: str) -> str | None:
        try:
            planned = self.planning.from_document(state)
        except Exception:
            log.exception("event=in_step_plan_failed state=%.200s", state)
            return None
        self.planned.append(planned)
        return planned.plan.to_json()

    def chains(self) -> bool:
        if not self.planned:
            return False
        if next_sql_step(self.planned[-1], self.planning.lease.owner) is not None:
            return True
        return self.handover is not None and self.handover()


def next_sql_step(planned: Planned, owner_id: str) -> dict[str, Any] | None:
    """The plan's one task, when it is the instance's only next step and an SQL step that
    the engine `owner_id` leased to itself; else None."""
    plan = planned.plan
    if len(plan.tasks) != 1 or plan.cancel_nodes or plan.drop_all_tasks:
        return None
    only = plan.tasks[0]
    return only if only["node_type"] == "SQL" and only["lease_owner"] == owner_id else None


class FirstTransaction:
    """The engine's planning for a new instance's first transaction (steps.FirstStep)."""

    def __init__(self, engine: EngineParts, instance_id: str) -> None:
        self.engine = engine
        self.instance_id = instance_id
        self.backend_pid: int | None = None
        self.planned: Planned | None = None  # the last plan made: what is applied
        self.task: Task | None = None  # the step run in the transaction
        self.advance = StepAdvance(engine.planning)  # once promoted
        self.promoted = False
        self._promotion: str | None = None  # the first plan with the step's task row
        self._first: str = ""  # the first plan as applied here, without that task row

    def plan_first(self, state: str) -> tuple[str, str, Task | None]:
        engine = self.engine
        planned = engine.planning.from_document(state)
        self.planned = planned
        plan = planned.plan
        advance_xmin = str(planned.instance["advance_xmin"])
        only = next_sql_step(planned, engine.owner_id)
        if only is None:
            return advance_xmin, plan.to_json(), None
        self._promotion = plan.to_json()
        plan.tasks = []  # run right here: it never becomes a task row (unless promoted)
        database = engine.catalog_database
        self.task = Task(
            self.instance_id,
            only["node_id"],
            "SQL",
            only["payload"],
            only["lease_token"],
            planned.owner,
            database,
        )
        engine.track(RunningStep(self.task, self.backend_pid, leased=False))
        self._first = plan.to_json()
        return advance_xmin, self._first, self.task

    def plan_done(self, task: Task, raw: str) -> list[str]:
        first = self.planned
        assert first is not None
        continuing = first.plan if first.plan.can_continue() else None
        done = self.engine.planning.completed(first.after(), task.node_id, raw, continuing)
        if done is None:  # cannot be: plan_first marked the step running
            raise StepFailed(f"first step {task.node_id} of {task.instance_id} not running")
        self.planned = done
        if continuing is not None and done.plan.continued_from is None:
            return [done.plan.to_json()]  # the first plan and this one, as one
        # in turn: the first plan cannot be continued, or a root loop began a new execution
        # (whose predecessor must be stored first)
        return [self._first, done.plan.to_json()]

    async def promote(self, advance_xmin: str) -> bool:
        engine, planned = self.engine, self.planned
        if self._promotion is None or planned is None or self.task is None:
            return False
        try:
            self.promoted = bool(
                await engine.pool().fetchval(
                    q("promote_first"), self.instance_id, advance_xmin, self._promotion
                )
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "event=first_step_promotion_failed instance=%s error=%r", self.instance_id, exc
            )
            return False
        if self.promoted:  # now an ordinary leased step, finished from the held plan
            engine.counters.first_steps_promoted_total += 1
            engine.planning.hold(self.instance_id, planned)
            running = engine.running.get((self.instance_id, self.task.node_id))
            if running is not None:
                running.leased = True
        return self.promoted
