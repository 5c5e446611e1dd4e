"""Execution scopes (§5.4): the scope each node runs in, and the stamp it is written with.

pg_durable runs each JOIN/RACE branch (extra_nodes too), and each loop that is not the root
of its orchestration, as a child orchestration named `<scope>::<generation>::<branch or loop
node id>`; a loop's iteration is a new generation (continue-as-new) of the orchestration it
is the root of, so a branch whose root is a loop gets one child scope. The body of a loop
made with continue_on_failure => true runs as a child orchestration of the loop's own in
each iteration (0.2.8), named the same way after the body's root node. A node's
status_details carry `{"execution_id": "<scope>::<generation>"}` of the scope it runs in.

pgdurable has no child orchestrations: a node's scope follows from the graph's structure,
and a scope's generation from the instance's execution (the root scope) or from its loop's
iteration counter, both of which the planner has. So stamps are computed, not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from engine.planner.flow import continues_on_failure
from engine.planner.kinds import LOOP, NodeType
from engine.planner.outcomes import Node

PARALLEL = (NodeType.JOIN, NodeType.RACE)
ROOT_SCOPE = ""  # the instance's own scope (its orchestration)


@dataclass(frozen=True, slots=True)
class Scopes:
    """Which scope each node runs in, and where each child scope was opened."""

    of: dict[str, str]  # node id -> id of the node rooting its scope (ROOT_SCOPE: the root)
    parent: dict[str, str]  # scope root id -> the scope its opener runs in

    @classmethod
    def build(
        cls, root: str, order: Iterable[Node], children: Callable[[Node], list[str]]
    ) -> Scopes:
        """From the nodes in execution order (each before its children)."""
        of = {root: ROOT_SCOPE}
        parent: dict[str, str] = {}
        for node in order:
            own = inner = of.get(node.id, ROOT_SCOPE)
            if node.type == LOOP and node.id != root and own != node.id:  # a non-root loop
                inner, parent[node.id] = node.id, own  # its body and condition
            isolated = node.left if continues_on_failure(node) else None
            for child in children(node):
                if node.type in PARALLEL:  # a branch: its own scope, rooted at the branch
                    of[child], parent[child] = child, own
                elif child == isolated:  # an iteration's body, under the loop's scope
                    of[child], parent[child] = child, inner
                else:
                    of[child] = inner
        return cls(of, parent)

    def stamp(
        self, node_id: str, instance_id: str, execution: int, nodes: Mapping[str, Node]
    ) -> str:
        """The execution stamp of `node_id`'s scope in its current generation."""
        segments = []
        scope = self.of.get(node_id, ROOT_SCOPE)
        while scope != ROOT_SCOPE:
            opener = nodes[scope]
            generation = max(opener.iteration, 1) if opener.type == LOOP else 1
            segments.append(f"{scope}::{generation}")
            scope = self.parent.get(scope, ROOT_SCOPE)
        segments.append(f"{instance_id}::{execution}")
        return "::".join(reversed(segments))
