"""Planning inside a step's own transaction: the engine's side of the executors'
InStepPlanning (InStep, for an SQL step's transaction) and FirstStep (FirstTransaction, for
a new instance's first advance and first step in one transaction), and what both ask of a
plan (next_sql_step, owner_of).

The executors (engine/executors/step_transaction.py, first_step.py) call these; the
Advancer (engine/advance.py) makes them and acts on what the executors report.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import asyncpg

from engine.connections.slots import SlotKey, StepSlots
from engine.errors import StepFailed
from engine.lifecycle_log import log_started
from engine.planner.held import Planned, Planning
from engine.planner.kinds import LEAF_TYPES, PENDING, RUNNING, NodeType
from engine.planner.plan import PlannedTask
from engine.records import Owner, Task
from engine.running import RunningStep

if TYPE_CHECKING:
    from engine.advance import Advancer

log = logging.getLogger("pgdurable.engine")


def owner_of(planned: Planned) -> Owner:
    """The owner of the instance a plan was made for (from its loaded state)."""
    return Owner(planned.owner_oid, planned.owner)


def next_sql_step(planned: Planned, owner_id: str) -> PlannedTask | None:
    """The plan's one task, when it is the instance's only next step and an SQL step that
    the engine `owner_id` leased to itself; else None."""
    plan = planned.plan
    if len(plan.tasks) != 1 or plan.cancel_nodes or plan.drop_all_tasks:
        return None
    only = plan.tasks[0]
    return only if only.node_type == NodeType.SQL and only.lease_owner == owner_id else None


class InStep:
    """The engine's planning for one SQL step's transaction (step_transaction.InStepPlanning)."""

    __slots__ = ("key", "planning", "slots")

    def __init__(self, planning: Planning, slots: StepSlots | None, key: SlotKey) -> None:
        self.planning = planning
        self.slots = slots  # None: never hand the connection over (a promoted first step)
        self.key = key

    def from_memory(self, task: Task, raw: str) -> Planned | None:
        try:
            return self.planning.completed_step(task.instance_id, task.node_id, raw)
        except Exception:  # a planner bug: load the state instead
            log.exception("event=held_plan_failed instance=%s", task.instance_id)
            return None

    def from_state(self, state: str) -> Planned | None:
        try:
            return self.planning.from_document(state)
        except Exception:
            # not the state itself: it holds the instance's SQL (--log-workflow-sql)
            log.exception("event=in_step_plan_failed state_bytes=%d", len(state))
            return None

    def alone(self, planned: Planned, task: Task) -> bool:
        """No leaf of the instance runs besides `task`, and the steps the plan starts."""
        started = {t.node_id for t in planned.plan.tasks}
        return not any(
            node.status == RUNNING
            and node.type in LEAF_TYPES
            and node.id != task.node_id
            and node.id not in started
            for node in planned.nodes.values()
        )

    def chains(self, planned: Planned) -> bool:
        """Does the plan leave exactly one next step, an SQL step of the instance that this
        engine runs, or does another step of the owner wait for a step slot?"""
        if self.next_step(planned) is not None:
            return True
        return self.slots is not None and self.slots.wanted(self.key)

    def next_step(self, planned: Planned) -> PlannedTask | None:
        return next_sql_step(planned, self.planning.lease.owner)


class FirstTransaction:
    """The engine's planning for a new instance's first transaction (first_step.FirstStep)."""

    def __init__(self, advancer: Advancer, instance_id: str) -> None:
        self.advancer = advancer
        self.instance_id = instance_id
        self.backend_pid: int | None = None
        self.planned: Planned | None = None  # the last plan made: what is applied
        self.task: Task | None = None  # the step run in the transaction
        self.advance = InStep(advancer.planning, None, (0, ""))  # once promoted
        self.promoted = False
        self.from_pending: dict[str, Any] | None = None  # the first plan starts the instance
        self._promotion: str | None = None  # the first plan with the step's task row
        self._first: str = ""  # the first plan as applied here, without that task row

    def plan_first(self, state: str) -> tuple[str, str, Task | None]:
        advancer = self.advancer
        planned = advancer.planning.from_document(state)
        self.planned = planned
        self.from_pending = planned.instance if planned.instance["status"] == PENDING else None
        plan = planned.plan
        advance_xmin = str(planned.instance["advance_xmin"])
        only = next_sql_step(planned, advancer.owner_id)
        if only is None:
            return advance_xmin, plan.to_json(), None
        self._promotion = plan.to_json()
        plan.tasks = []  # run right here: it never becomes a task row (unless promoted)
        database = advancer.store.catalog_database
        assert only.lease_token is not None  # leased to this engine
        self.task = Task(
            self.instance_id,
            only.node_id,
            NodeType.SQL,
            only.payload,
            only.lease_token,
            owner_of(planned),
            database,
        )
        advancer.parts.running.track(RunningStep(self.task, self.backend_pid, leased=False))
        advancer.parts.tasks.log_sql(self.task)
        self._first = plan.to_json()
        return advance_xmin, self._first, self.task

    def plan_done(self, task: Task, raw: str) -> list[str]:
        first = self.planned
        assert first is not None
        continuing = first.plan if first.plan.can_continue() else None
        done = self.advancer.planning.completed(first.after(), task.node_id, raw, continuing)
        if done is None:  # cannot be: plan_first marked the step running
            raise StepFailed(f"first step {task.node_id} of {task.instance_id} not running")
        self.planned = done
        if continuing is not None and done.plan.continued_from is None:
            return [done.plan.to_json()]  # the first plan and this one, as one
        # in turn: the first plan cannot be continued, or a root loop began a new execution
        # (whose predecessor must be stored first)
        return [self._first, done.plan.to_json()]

    async def promote(self, advance_xmin: str) -> bool:
        advancer, planned = self.advancer, self.planned
        if self._promotion is None or planned is None or self.task is None:
            return False
        try:
            store = advancer.store
            self.promoted = await store.promote_first(
                self.instance_id, advance_xmin, self._promotion
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "event=first_step_promotion_failed instance=%s error=%r", self.instance_id, exc
            )
            return False
        if self.promoted:  # now an ordinary leased step, finished from the held plan
            advancer.parts.counters.first_steps_promoted_total += 1
            if self.from_pending is not None:
                log_started(self.instance_id, self.from_pending)
            advancer.planning.hold(self.instance_id, planned)
            running = advancer.parts.running.get(self.instance_id, self.task.node_id)
            if running is not None:
                running.leased = True
        return self.promoted
