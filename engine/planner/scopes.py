"""Execution scopes (§5.4): the scope each node runs in, and the stamp it is written with.

pg_durable runs each JOIN/RACE branch (extra_nodes too), and each loop that is not the root
of its orchestration, as a child orchestration named `<scope>::<generation>::<branch or loop
node id>`; a loop's iteration is a new generation (continue-as-new) of the orchestration it
is the root of, so a branch whose root is a loop gets one child scope. The body of a loop
made with continue_on_failure => true runs as a child orchestration of the loop's own in
each iteration (0.2.8), named the same way after the body's root node. A node's
status_details carry `{"execution_id": "<scope>::<generation>"}` of the scope it runs in.

pgdurable has no child orchestrations: the planner carries the scope it is in as it drives
the graph down from the root, and a scope's generation is the instance's execution (the root
scope) or its loop's iteration counter. So stamps are computed, not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from engine.planner.flow import continues_on_failure
from engine.planner.kinds import LOOP, NodeType
from engine.planner.outcomes import Node

PARALLEL = (NodeType.JOIN, NodeType.RACE)


@dataclass(frozen=True, slots=True)
class Scope:
    """A child scope: the node rooting it, and the scope it was opened in (None: the
    instance's). Stamps are spelled only when a node is written: the scopes around a node
    do not change generation while the node is driven."""

    root: str
    outer: Scope | None


def stamp(scope: Scope | None, root_stamp: str, nodes: Mapping[str, Node]) -> str:
    """The execution stamp of `scope` (None: the instance's, stamped `root_stamp`) in its
    current generation: a loop's iteration for a scope a loop roots, else 1."""
    parts = []
    while scope is not None:
        opener = nodes[scope.root]
        generation = max(opener.iteration, 1) if opener.type == LOOP else 1
        parts.append(f"{scope.root}::{generation}")
        scope = scope.outer
    parts.append(root_stamp)
    return "::".join(reversed(parts))


def child_scope(parent: Node, child: str, scope: Scope | None, graph_root: str) -> Scope | None:
    """The scope `child` runs in, its parent running in `scope`."""
    if parent.type in PARALLEL:  # a branch: a scope of its own, rooted at the branch
        return Scope(child, scope)
    if parent.type != LOOP:
        return scope
    if parent.id != graph_root and (scope is None or scope.root != parent.id):
        scope = Scope(parent.id, scope)  # a loop not its scope's root: body and condition
    if child == parent.left and continues_on_failure(parent):
        scope = Scope(child, scope)  # each iteration's body, as a child of the loop's
    return scope


def subtree_scopes(
    top: Node,
    scope: Scope | None,
    graph_root: str,
    nodes: Mapping[str, Node],
    children: Callable[[Node], list[str]],
) -> Iterator[tuple[Node, Scope | None]]:
    """Each node of the subtree rooted at `top` (which runs in `scope`) with its scope."""
    stack = [(top, scope)]
    while stack:
        node, own = stack.pop()
        yield node, own
        for child in children(node):
            if child in nodes:
                stack.append((nodes[child], child_scope(node, child, own, graph_root)))
