"""Instance state kept in memory between the steps this engine runs (df._complete_held).

After this engine applies a plan, it knows the instance's stored state exactly: the state it
planned from, changed by the plan. While the instance has steps running here, the next
step's transaction can plan from that state and apply the plan with one call
(df._complete_held), instead of loading every node again. The database decides whether
the memory is still exact (same version, no change waiting in _advance); if not, the step
falls back to loading, and nothing here is trusted.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from engine.planner.graph import Planner
from engine.planner.kinds import COMPLETED, PAUSED, RUNNING, SQL, TERMINAL
from engine.planner.outcomes import Node
from engine.planner.plan import Plan, TaskLease


@dataclass(slots=True)
class Planned:
    """One advance: the state it planned from (nodes as the plan leaves them) and the plan."""

    instance: dict[str, Any]  # the loaded document, without its "nodes"
    nodes: dict[str, Node]
    plan: Plan
    clock_offset: float  # the database's clock minus ours, when the state was loaded
    from_memory: bool = False  # planned from held state, not from a loaded document

    @property
    def owner(self) -> str:
        """The name of the instance's owner now ("": its role is gone)."""
        return str(self.instance["owner"] or "")

    @property
    def owner_oid(self) -> int:
        """The OID of the instance's owner, fixed when it was first loaded."""
        return int(self.instance["owner_oid"] or 0)

    def after(self) -> Planned:
        """The instance's state once the plan is applied (the nodes are already)."""
        instance = dict(self.instance)
        plan = self.plan
        instance["status"] = plan.instance_status or instance["status"]
        instance["events"] = plan.events
        instance["execution_id"] = plan.execution_id
        instance["version"] = plan.version
        instance["signals"] = [s for s in instance.get("signals", []) if not s.get("taken")]
        return Planned(instance, self.nodes, plan, self.clock_offset)


class Planning:
    """Plans instances, from a loaded document or from held state."""

    def __init__(self, lease: TaskLease, allow_superuser: bool, min_iteration: float) -> None:
        self.lease = lease
        self.allow_superuser = allow_superuser
        self.min_iteration = min_iteration
        self._held: dict[str, Planned] = {}

    def from_document(self, state_text: str) -> Planned:
        """Plan from what df._load_for_advance returned."""
        instance = json.loads(state_text)
        advance_keys = instance.pop("advance_keys", None)
        instance["allow_superuser"] = self.allow_superuser
        instance["min_iteration_seconds"] = self.min_iteration
        planner = Planner(instance, self.lease, _new_token)
        plan = planner.run()
        plan.version = int(instance.get("version") or 0) + 1
        plan.advance_keys = advance_keys
        del instance["nodes"]
        offset = float(instance.get("now") or time.time()) - time.time()
        return Planned(instance, planner.nodes, plan, offset)

    def hold(self, instance_id: str, planned: Planned) -> None:
        """Keep the state an applied plan left (dropped once the instance is finished or
        paused: df.resume changes the stored state)."""
        after = planned.after()
        if after.instance["status"] in TERMINAL or after.instance["status"] == PAUSED:
            self._held.pop(instance_id, None)
        else:
            self._held[instance_id] = after

    def drop(self, instance_id: str) -> None:
        self._held.pop(instance_id, None)

    def holds(self, instance_id: str) -> bool:
        return instance_id in self._held

    def completed_step(self, instance_id: str, node_id: str, raw: str) -> Planned | None:
        """Plan from held state in which SQL step `node_id` just completed with `raw`.

        The held state is taken out: it is held again only once the plan is committed.
        None when nothing is held, or the step is not one the held state runs."""
        held = self._held.pop(instance_id, None)
        return None if held is None else self.completed(held, node_id, raw)

    def completed(
        self, state: Planned, node_id: str, raw: str, continuing: Plan | None = None
    ) -> Planned | None:
        """Plan from `state` (an applied plan's, see Planned.after) in which SQL step
        `node_id` just completed with `raw`; its nodes are updated in place.

        With `continuing` (state's own plan, not applied yet, see Plan.can_continue), the
        plan made adds to it: one plan with the effect of both."""
        node = state.nodes.get(node_id)
        if node is None or node.type != SQL or node.status != RUNNING:
            return None
        node.status, node.raw, node.error = COMPLETED, raw, None
        instance = dict(state.instance)
        instance["now"] = time.time() + state.clock_offset
        planner = Planner(instance, self.lease, _new_token, nodes=state.nodes, plan=continuing)
        completion = {"id": node_id, "status": COMPLETED, "raw": raw, "error": None}
        planner.plan.nodes.setdefault(node_id, {}).update(completion)
        plan = planner.run()
        plan.nodes[node_id]["delivery"] = "exactly-once"
        plan.version = int(state.instance["version"]) + 1
        return Planned(instance, state.nodes, plan, state.clock_offset, from_memory=True)

    def snapshot(self, instance_id: str) -> Planned | None:
        """A copy of the held state (for verification), or None."""
        held = self._held.get(instance_id)
        return None if held is None else copy.deepcopy(held)


def _new_token() -> str:
    return str(uuid.uuid4())


def differences(held: Planned, document: dict[str, Any]) -> list[str]:
    """Where held state and a freshly loaded document disagree (empty: they agree)."""
    found = []
    for key in ("status", "events", "execution_id", "version"):
        if held.instance.get(key) != document.get(key):
            found.append(f"{key}: held {held.instance.get(key)!r}, stored {document.get(key)!r}")
    stored = {n["id"]: Node.from_json(n) for n in document.get("nodes") or []}
    for node_id, node in held.nodes.items():
        other = stored.get(node_id)
        if other is None:
            found.append(f"node {node_id}: not stored")
            continue
        for attr in ("status", "raw", "error", "iteration"):
            mine, theirs = getattr(node, attr), getattr(other, attr)
            if mine != theirs:
                mine = str(mine) if isinstance(mine, str) else mine  # a Status: its text
                found.append(f"node {node_id} {attr}: held {mine!r}, stored {theirs!r}")
    return found
