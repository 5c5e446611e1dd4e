"""What one advance decides: the Plan, its tasks and the signals it consumes.

A plan is serialised as df._apply_plan's argument (Plan.to_json); the catalog reads each
task and consumed signal as a JSON object with the keys written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskLease:
    """Who will run the leaf tasks this plan creates (the planning engine itself)."""

    owner: str
    seconds: float


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """A leaf the plan starts: leased to the planning engine, or a timer due after `delay`
    seconds (no lease owner or token; the scheduler claims it once due)."""

    node_id: str
    node_type: str  # a kinds.NodeType value (the node's type as loaded)
    payload: str | None
    lease_owner: str | None
    lease_token: str | None
    lease_seconds: float
    delay: float | None = None  # seconds until due: a timer; None for a leased task

    def as_dict(self) -> dict[str, Any]:
        """The task as df._apply_plan reads it (a leased task has no "delay" key)."""
        body = {
            "node_id": self.node_id,
            "node_type": self.node_type,
            "payload": self.payload,
            "lease_owner": self.lease_owner,
            "lease_token": self.lease_token,
            "lease_seconds": self.lease_seconds,
        }
        if self.delay is not None:
            body["delay"] = self.delay
        return body


@dataclass(frozen=True, slots=True)
class ConsumedSignal:
    """A df.signals row (`id`) that SIGNAL node `node_id` took."""

    id: int
    node_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "node_id": self.node_id}


@dataclass(slots=True)
class Plan:
    """What one advance decided; serialised as df._apply_plan's argument.

    Mutable on purpose: one planning pass accumulates into it as it drives the graph (node
    transitions, event counts, tasks), a pass from held state may continue a plan not yet
    applied (can_continue), and the engine sets the version and drops a task it runs in
    place before applying it. A frozen plan would need a builder and a copy at the end of
    every pass, on every step's path. What it holds (tasks, consumed signals) is frozen."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: list[PlannedTask] = field(default_factory=list)
    cancel_nodes: list[str] = field(default_factory=list)
    consumed_signals: list[ConsumedSignal] = field(default_factory=list)
    instance_status: str | None = None
    execution_status: str = "Running"
    output: str | None = None
    events: int = 0
    execution_id: int = 1
    continued_from: int | None = None  # a root loop began a new execution
    drop_all_tasks: bool = False
    wake_at: float | None = None  # epoch seconds: advance again then
    version: int | None = None  # the instance's version once this plan is applied
    advance_keys: list[str] | None = None  # the _advance rows the state was loaded with

    def can_continue(self) -> bool:
        """Whether a later pass may add to this plan, so that both are applied as one with
        the same effect as applying this plan and then the later one: nothing here that
        applying twice would order differently (tasks, cancellations, signals, timers)."""
        return not (
            self.tasks
            or self.cancel_nodes
            or self.consumed_signals
            or self.drop_all_tasks
            or self.continued_from is not None
            or self.wake_at is not None
        )

    def to_json(self) -> str:
        body = {
            "nodes": list(self.nodes.values()),
            "tasks": [task.as_dict() for task in self.tasks] if self.tasks else [],
            "cancel_nodes": self.cancel_nodes,
            "consumed_signals": (
                [signal.as_dict() for signal in self.consumed_signals]
                if self.consumed_signals
                else []
            ),
            "execution_status": self.execution_status,
            "output": self.output,
            "events": self.events,
            "execution_id": self.execution_id,
            "continued_from": self.continued_from,
            "drop_all_tasks": self.drop_all_tasks,
            "wake_at": self.wake_at,
            "version": self.version,
        }
        if self.instance_status is not None:
            body["instance_status"] = self.instance_status
        if self.advance_keys is not None:
            body["advance_keys"] = self.advance_keys
        return json.dumps(body, separators=(",", ":"))
