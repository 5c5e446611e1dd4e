"""The planner: from an instance's stored graph to the next state changes (pure, no I/O).

Each advance re-drives the graph from the root. Finished subtrees answer from their stored
status; a compound node finishes when its children have; a pending leaf is marked running
and becomes a task. The engine commits the resulting plan in the same transaction that
loaded the state, so every decision is durable before anything acts on it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

from engine.errors import OwnerRefused
from engine.planner import compensate, deadlines, flow, leaves
from engine.planner.kinds import (
    BREAK,
    CANCELLED,
    COMPLETED,
    FAILED,
    IF,
    JOIN,
    LOOP,
    PAUSED,
    PENDING,
    RUNNING,
    NodeType,
    Status,
)
from engine.planner.outcomes import Broke, Done, Failed, Node, Outcome
from engine.planner.plan import Plan, TaskLease
from engine.planner.scopes import Scope, child_scope, stamp, subtree_scopes
from engine.planner.substitute import substitute_results, substitute_vars

log = logging.getLogger("pgdurable.engine")
UNNAMED = (NodeType.SLEEP, NodeType.WAIT_SCHEDULE, NodeType.BREAK)  # results not named
CONFIGURED = (NodeType.IF, NodeType.LOOP, NodeType.JOIN)  # a JSON config in the query
PARALLEL = (NodeType.JOIN, NodeType.RACE)
BREAK_OUTSIDE_LOOP = (
    "df.break() was called outside of a loop. df.break() may only be used inside df.loop()."
)


class Planner:
    """Drives one instance's graph once and records the resulting changes in a Plan."""

    def __init__(
        self,
        instance: dict[str, Any],
        lease: TaskLease,
        new_token: Callable[[], str],
        nodes: dict[str, Node] | None = None,
        plan: Plan | None = None,
    ) -> None:
        """`nodes`, when given, are the instance's nodes already (they are updated in place);
        otherwise they are read from the loaded document's "nodes". `plan`, when given, is
        a plan not yet applied that this pass continues: its changes and this pass's are
        then applied as one (later transitions of a node replace earlier ones)."""
        self.instance = instance
        if nodes is None:
            nodes = {n["id"]: Node.from_json(n) for n in instance["nodes"] or []}
        self.nodes = nodes
        self.lease = lease
        self.new_token = new_token
        self.now = float(instance.get("now") or 0.0)
        self.min_iteration_seconds = float(instance.get("min_iteration_seconds", 1.0))
        self.plan = plan or Plan(
            events=int(instance["events"]), execution_id=int(instance["execution_id"] or 1)
        )
        self.scope: Scope | None = None  # the scope of the node being driven (scopes.py)
        # the nearest deadline of the df.timeout nodes around the node being driven
        self.deadline: float | None = None

    def stamp(self, scope: Scope | None) -> dict[str, str]:
        """The status_details of a node running in `scope`: its execution stamp."""
        return {"execution_id": stamp(scope, self._root_stamp, self.nodes)}

    @property
    def _root_stamp(self) -> str:
        return f"{self.instance['id']}::{self.plan.execution_id}"

    # -- entry point ----------------------------------------------------------------------
    def run(self) -> Plan:
        status = self.instance["status"]
        if status in (COMPLETED, FAILED, PAUSED, Status.COMPENSATED):
            return self.plan  # a paused instance: results recorded meanwhile wait for df.resume
        if status == CANCELLED:
            return self._cancel()
        if status == PENDING:
            if (problem := self._owner_problem()) is not None:
                return self._finish(Failed(problem))
            self.plan.instance_status = RUNNING
            self.plan.events += 5  # started, load-graph, instance->running
        try:
            outcome = self.drive(self.instance["root"])
        except Exception as exc:  # a graph the start checks let through, or a planner bug
            return self._unplannable(exc)
        if isinstance(outcome, Broke):
            outcome = Failed(BREAK_OUTSIDE_LOOP)
        if isinstance(outcome, Failed) and compensate.has_forwards(self):
            return self._compensate(outcome)
        if outcome is not None:
            self._finish(outcome)
        return self.plan

    def _compensate(self, failure: Failed) -> Plan:
        """The root failed after forwards completed: undo them, then end compensated."""
        try:
            outcome = compensate.undo(self, failure)
        except Exception as exc:  # a planner bug: fail once, as for any unplannable graph
            return self._unplannable(exc)
        if isinstance(outcome, compensate.Undone):
            self._finish(Failed(outcome.error))
            self.plan.instance_status = Status.COMPENSATED
        elif outcome is not None:
            self._finish(outcome)
        return self.plan

    def _owner_problem(self) -> str | None:
        inst = self.instance
        if inst["owner"] is None:
            return str(OwnerRefused.gone(inst["id"]))
        if inst["superuser"] and not inst["allow_superuser"]:
            return str(OwnerRefused.superuser(inst["id"], inst["owner"]))
        return None

    def _finish(self, outcome: Done | Failed) -> Plan:
        self.plan.events += 3  # instance->terminal activity + terminal event
        if isinstance(outcome, Done):
            self.plan.instance_status = COMPLETED
            self.plan.execution_status = "Completed"
            self.plan.output = outcome.raw
        else:
            self.plan.instance_status = FAILED
            self.plan.execution_status = "Failed"
            self.plan.output = outcome.error
        return self.plan

    def _unplannable(self, exc: Exception) -> Plan:
        """The instance cannot be planned: it fails once, with the reason, instead of being
        retried for ever (the tasks this pass made never start)."""
        log.error("event=plan_failed instance=%s error=%r", self.instance["id"], exc)
        self.plan.tasks.clear()
        self.plan.drop_all_tasks = True
        self.plan.wake_at = None
        return self._finish(Failed(f"pgdurable could not plan this instance: {exc!r}"))

    def _cancel(self) -> Plan:
        self.plan.drop_all_tasks = True
        self.plan.cancel_nodes = list(self.nodes)
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
        if node.status == COMPLETED:
            return Broke(node.raw or "null") if node.type == BREAK else Done(node.raw or "null")
        if node.status == FAILED:
            return Failed(node.error or "failed")
        return HANDLERS.get(node.type, Planner._unsupported)(self, node)

    def drive_child(self, parent: Node, child: str | None) -> Outcome:
        """drive() for a child of a JOIN, RACE or LOOP, in the scope it runs in."""
        outer = self.scope
        self.scope = child_scope(parent, child or "", outer, self.instance["root"])
        outcome = self.drive(child)  # an exception ends the pass: nothing to restore then
        self.scope = outer
        return outcome

    def set_status(
        self, node: Node, status: Status, raw: str | None = None, error: str | None = None
    ) -> None:
        """Record a node transition (two engine events, as pg_durable counts them), stamped
        with the scope of the node being driven."""
        node.status, node.raw, node.error = status, raw, error
        entry = self.plan.nodes.setdefault(node.id, {"id": node.id})
        entry.update(status=status.value, raw=raw, error=error, details=self.stamp(self.scope))
        self.plan.events += 2

    def complete(self, node: Node, outcome: Done | Failed | Broke) -> Outcome:
        """Store a compound node's final outcome (a break passes through as completed)."""
        if isinstance(outcome, Failed):
            self.set_status(node, FAILED, error=outcome.error)
        else:
            self.set_status(node, COMPLETED, raw=outcome.raw)
        return outcome

    def start(self, node: Node) -> None:
        if node.status == PENDING:
            self.set_status(node, RUNNING)

    def subtree(self, node_id: str | None) -> Iterator[Node]:
        """A node and all its descendants (children, conditions, extra branches)."""
        stack: list[str | None] = [node_id]
        while stack:
            current = stack.pop()
            if current is None or current not in self.nodes:
                continue
            node = self.nodes[current]
            yield node
            stack.extend(self._children_in_order(node))

    def abandon(self, race: Node, loser: str, loop_message: str) -> None:
        """A RACE loser: stop its tasks and running SQL; its stored statuses stay, but a
        running loop in it fails with `loop_message`."""
        if loser not in self.nodes:
            return
        root = self.instance["root"]
        top = child_scope(race, loser, self.scope, root)
        below = subtree_scopes(self.nodes[loser], top, root, self.nodes, self._children_in_order)
        driving = self.scope
        for node, scope in below:
            if node.status in (PENDING, RUNNING):
                self.plan.cancel_nodes.append(node.id)
                if node.type == LOOP and node.status == RUNNING:
                    self.scope = scope
                    self.set_status(node, FAILED, error=loop_message)
        self.scope = driving

    def reset(self, node: Node) -> None:
        """A node back to pending, for another run (its row and state reused: a loop's next
        iteration, a RETRY's next attempt)."""
        node.status, node.raw, node.error = PENDING, None, None
        node.iteration = 0
        self.plan.nodes[node.id] = {
            "id": node.id,
            "status": PENDING,
            "raw": None,
            "error": None,
            "reset": True,
        }

    def begin_iteration(self, loop: Node, first: bool) -> None:
        """Reset the loop's body (rows are reused: storage does not grow) and count it.

        A loop inside the body starts counting again: its scope is a new one, opened in the
        new generation of this loop's."""
        if not first:
            for node in self.subtree(loop.id):
                if node.id != loop.id and node.status != PENDING:
                    self.reset(node)
            if loop.id == self.instance["root"]:
                self._continue_as_new()
        loop.iteration += 1
        loop.iteration_started = self.now
        entry = self.plan.nodes.setdefault(
            loop.id, {"id": loop.id, "status": loop.status, "raw": None, "error": None}
        )
        entry.update(
            iteration=loop.iteration, iteration_started=self.now, details=self.stamp(self.scope)
        )

    def _continue_as_new(self) -> None:
        self.plan.continued_from = self.plan.execution_id
        self.plan.execution_id += 1
        self.plan.events = 1

    def wake_at(self, when: float) -> None:
        self.plan.wake_at = when if self.plan.wake_at is None else min(self.plan.wake_at, when)

    def _unsupported(self, node: Node) -> Outcome:
        self.start(node)
        return self.complete(
            node, Failed(f"{node.type} nodes are not supported by this pgdurable version")
        )

    # -- substitution -----------------------------------------------------------------------
    def substitute(self, text: str, node: Node) -> str:
        inst = self.instance
        text = substitute_vars(text, inst["vars"], inst["id"], inst["label"])
        return substitute_results(text, self.named_results(node))

    def named_results(self, reader: Node) -> dict[str, str]:
        """The |=> results `reader` can see (§6.4): those outside any JOIN/RACE branch it is
        not in, plus whole finished JOINs and the winning branch of finished RACEs; later
        executions win. SLEEP/WAIT_SCHEDULE/BREAK names are not stored."""
        scopes = self._scope_of
        mine = set(scopes.get(reader.id, ()))
        visible: dict[str, str] = {}
        for node in self._order:
            if not node.name or node.status != COMPLETED or node.raw is None:
                continue
            if node.type in UNNAMED:
                continue
            if all(scope in mine or self._merged(*scope) for scope in scopes.get(node.id, ())):
                visible[node.name] = node.raw
        return visible

    def _merged(self, parallel_id: str, branch: str) -> bool:
        """Has this JOIN/RACE branch's map been merged into its parent's?"""
        parallel = self.nodes[parallel_id]
        if parallel.status != COMPLETED:
            return False
        if parallel.type == JOIN:
            return True
        winner = self.nodes.get(branch)
        return winner is not None and winner.raw == parallel.raw

    def _children_in_order(self, node: Node) -> list[str]:
        config = node.config() if node.type in CONFIGURED else {}
        condition = config.get("condition_node")
        if node.type == IF:
            ids = [condition, node.left, node.right]
        elif node.type == LOOP:
            ids = [node.left, condition]
        elif node.type in PARALLEL:
            ids = list(flow.branches(node))
        else:
            ids = [node.left, node.right]
        return [str(i) for i in ids if i is not None and str(i) in self.nodes]

    @functools.cached_property
    def _order(self) -> list[Node]:
        """Nodes in execution order (structure only: computed once per advance)."""
        order: list[Node] = []
        stack = [self.instance["root"]]
        while stack:
            node = self.nodes.get(stack.pop())
            if node is None:
                continue
            order.append(node)
            stack.extend(reversed(self._children_in_order(node)))
        return order

    @functools.cached_property
    def _scope_of(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """For each node: the (JOIN/RACE id, branch root id) pairs it sits inside."""
        scopes: dict[str, tuple[tuple[str, str], ...]] = {self.instance["root"]: ()}
        for node in self._order:
            inherited = scopes.get(node.id, ())
            for child in self._children_in_order(node):
                own = ((node.id, child),) if node.type in PARALLEL else ()
                scopes[child] = inherited + own
        return scopes


HANDLERS: dict[str, Callable[[Planner, Node], Outcome]] = {
    NodeType.THEN: flow.then,
    NodeType.IF: flow.if_,
    NodeType.JOIN: flow.join,
    NodeType.RACE: flow.race,
    NodeType.LOOP: flow.loop,
    NodeType.BREAK: flow.break_,
    NodeType.SQL: leaves.sql,
    NodeType.HTTP: leaves.http,
    NodeType.HTTP_MULTIPART: leaves.http,
    NodeType.SLEEP: leaves.sleep,
    NodeType.WAIT_SCHEDULE: leaves.wait_schedule,
    NodeType.SIGNAL: leaves.signal,
    NodeType.RETRY: deadlines.retry,
    NodeType.TIMEOUT: deadlines.timeout,
    NodeType.COMPENSATED: compensate.compensated,
}
