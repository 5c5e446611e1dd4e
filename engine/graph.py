"""The planner: from an instance's stored graph to the next state changes (pure, no I/O).

Each advance re-drives the graph from the root. Finished subtrees answer from their stored
status; a compound node finishes when its children have; a pending leaf is marked running
and becomes a task. The engine commits the resulting plan in the same transaction that
loaded the state, so every decision is durable before anything acts on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.substitute import SubstitutionError, substitute_results, substitute_vars


class NodeStatus(StrEnum):
    """Stored node statuses."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(slots=True)
class Node:
    """One df.nodes row as the planner sees it."""

    id: str
    type: str
    query: str | None
    name: str | None
    left: str | None
    right: str | None
    status: str
    raw: str | None
    error: str | None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Node:
        return cls(
            item["id"],
            item["type"],
            item["query"],
            item["name"],
            item["left"],
            item["right"],
            item["status"],
            item["raw"],
            item["error"],
        )


@dataclass(frozen=True, slots=True)
class Done:
    raw: str


@dataclass(frozen=True, slots=True)
class Failed:
    error: str


WAITING = None
Outcome = Done | Failed | None


@dataclass(slots=True)
class Plan:
    """What one advance decided; serialised as df._apply_plan's argument."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    instance_status: str | None = None
    execution_status: str = "Running"
    output: str | None = None
    events: int = 0
    execution_id: int = 1
    drop_all_tasks: bool = False

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "nodes": list(self.nodes.values()),
            "tasks": self.tasks,
            "execution_status": self.execution_status,
            "output": self.output,
            "events": self.events,
            "execution_id": self.execution_id,
            "drop_all_tasks": self.drop_all_tasks,
        }
        if self.instance_status is not None:
            body["instance_status"] = self.instance_status
        return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class TaskLease:
    """Who will run the leaf tasks this plan creates (the planning engine itself)."""

    owner: str
    seconds: float


class Planner:
    """Drives one instance's graph once and records the resulting changes in a Plan."""

    def __init__(
        self, instance: dict[str, Any], lease: TaskLease, new_token: Callable[[], str]
    ) -> None:
        self.instance = instance
        self.nodes = {n["id"]: Node.from_json(n) for n in instance["nodes"] or []}
        self.lease = lease
        self.new_token = new_token
        self.plan = Plan(
            events=int(instance["events"]), execution_id=int(instance["execution_id"] or 1)
        )
        self.stamp = json.dumps({"execution_id": f"{instance['id']}::{self.plan.execution_id}"})

    # -- entry point ----------------------------------------------------------------------
    def run(self) -> Plan:
        status = self.instance["status"]
        if status in ("completed", "failed"):
            return self.plan
        if status == "cancelled":
            return self._cancel()
        if status == "pending":
            if (problem := self._owner_problem()) is not None:
                return self._finish(Failed(problem))
            self.plan.instance_status = "running"
            self.plan.events += 5  # started, load-graph, instance->running
        outcome = self.drive(self.instance["root"])
        if outcome is not None:
            self._finish(outcome)
        return self.plan

    def _owner_problem(self) -> str | None:
        inst = self.instance
        if inst["owner"] is None:
            return f"Instance {inst['id']}: submitted_by role no longer exists in pg_roles"
        if inst["superuser"] and not inst["allow_superuser"]:
            return (
                f"pg_durable blocked instance {inst['id']}: submitted_by role "
                f'"{inst["owner"]}" is a superuser, but '
                "pg_durable.enable_superuser_instances is off"
            )
        return None

    def _finish(self, outcome: Done | Failed) -> Plan:
        self.plan.events += 3  # instance->terminal activity + terminal event
        if isinstance(outcome, Done):
            self.plan.instance_status = "completed"
            self.plan.execution_status = "Completed"
            self.plan.output = outcome.raw
        else:
            self.plan.instance_status = "failed"
            self.plan.execution_status = "Failed"
            self.plan.output = outcome.error
        return self.plan

    def _cancel(self) -> Plan:
        self.plan.drop_all_tasks = True
        self.plan.execution_status = "Failed"
        self.plan.output = "Cancelled by user"
        self.plan.events += 1
        return self.plan

    # -- driving --------------------------------------------------------------------------
    def drive(self, node_id: str | None) -> Outcome:
        """The node's outcome so far, starting whatever can start."""
        if node_id is None or node_id not in self.nodes:
            return Failed(f"graph references missing node {node_id}")
        node = self.nodes[node_id]
        if node.status == NodeStatus.COMPLETED:
            return Done(node.raw or "null")
        if node.status == NodeStatus.FAILED:
            return Failed(node.error or "failed")
        handler = HANDLERS.get(node.type, Planner._unsupported)
        return handler(self, node)

    def set_status(
        self, node: Node, status: NodeStatus, raw: str | None = None, error: str | None = None
    ) -> None:
        """Record a node transition (and count it as two engine events)."""
        node.status, node.raw, node.error = status, raw, error
        self.plan.nodes[node.id] = {
            "id": node.id,
            "status": status.value,
            "raw": raw,
            "error": error,
            "details": json.loads(self.stamp),
        }
        self.plan.events += 2

    def complete(self, node: Node, outcome: Done | Failed) -> Outcome:
        """Store a compound node's final outcome."""
        if isinstance(outcome, Done):
            self.set_status(node, NodeStatus.COMPLETED, raw=outcome.raw)
        else:
            self.set_status(node, NodeStatus.FAILED, error=outcome.error)
        return outcome

    def start(self, node: Node) -> None:
        if node.status == NodeStatus.PENDING:
            self.set_status(node, NodeStatus.RUNNING)

    # -- node types ---------------------------------------------------------------------------
    def _then(self, node: Node) -> Outcome:
        self.start(node)
        first = self.drive(node.left)
        if not isinstance(first, Done):
            return self.complete(node, first) if isinstance(first, Failed) else WAITING
        second = self.drive(node.right)
        if second is None:
            return WAITING
        return self.complete(node, second)

    def _leaf_task(self, node: Node, payload: str | None, due_in: float | None = None) -> Outcome:
        if node.status == NodeStatus.RUNNING:
            return WAITING
        self.set_status(node, NodeStatus.RUNNING)
        self.plan.events += 2  # the terminal transition, recorded when the task finishes
        task: dict[str, Any] = {
            "node_id": node.id,
            "node_type": node.type,
            "payload": payload,
            "lease_owner": self.lease.owner,
            "lease_token": self.new_token(),
            "lease_seconds": self.lease.seconds,
        }
        if due_in is not None:
            task.update(lease_owner=None, lease_token=None, delay=due_in)
        self.plan.tasks.append(task)
        return WAITING

    def _sql(self, node: Node) -> Outcome:
        if node.status == NodeStatus.RUNNING:
            return WAITING
        try:
            text = self.substitute(node.query or "")
        except SubstitutionError as exc:
            self.set_status(node, NodeStatus.RUNNING)
            return self.complete(node, Failed(str(exc)))
        self.plan.events += 2  # the execute-sql activity
        return self._leaf_task(node, text)

    def _sleep(self, node: Node) -> Outcome:
        return self._leaf_task(node, node.query, due_in=float(node.query or 0))

    def _unsupported(self, node: Node) -> Outcome:
        self.start(node)
        return self.complete(
            node, Failed(f"{node.type} nodes are not supported by this pgdurable version")
        )

    # -- substitution -----------------------------------------------------------------------
    def substitute(self, text: str) -> str:
        inst = self.instance
        text = substitute_vars(text, inst["vars"], inst["id"], inst["label"])
        return substitute_results(text, self.named_results())

    def named_results(self) -> dict[str, str]:
        """Results captured with |=> so far (SLEEP/WAIT_SCHEDULE/BREAK names are not stored)."""
        return {
            n.name: n.raw
            for n in self.nodes.values()
            if n.name
            and n.status == NodeStatus.COMPLETED
            and n.raw is not None
            and n.type not in ("SLEEP", "WAIT_SCHEDULE", "BREAK")
        }


HANDLERS: dict[str, Callable[[Planner, Node], Outcome]] = {
    "THEN": Planner._then,
    "SQL": Planner._sql,
    "SLEEP": Planner._sleep,
}
