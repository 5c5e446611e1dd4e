"""An instance's node tree laid out in layers for an SVG diagram (pure: no I/O).

Each node sits one layer below its parent; leaves take the next free column from left to
right and a parent is centred over its children, so edges never cross.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

BOX_WIDTH, BOX_HEIGHT = 176, 46
COLUMN_GAP, LAYER_GAP = 18, 44
MARGIN = 12
MAX_DRAWN = 400  # beyond this many nodes the page shows no diagram (the explain text stays)
SUBTITLE_CHARACTERS = 26


@dataclass(frozen=True, slots=True)
class GraphNode:
    """What the diagram needs of a node row."""

    node_id: str
    node_type: str
    query: str | None
    result_name: str | None
    left_node: str | None
    right_node: str | None
    status: str  # the inferred status: what the user should read


@dataclass(frozen=True, slots=True)
class PlacedNode:
    """A node's box: its top-left corner, what it says and its children in the diagram."""

    node_id: str
    status: str
    title: str
    subtitle: str
    x: int
    y: int
    children: tuple[str, ...]
    running_children: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """The node that is running now: running, with no running child (its running
        ancestors only wait for it)."""
        return self.status == "running" and not self.running_children


@dataclass(frozen=True, slots=True)
class Edge:
    """A line from a parent's bottom to a child's top, labelled with the child's role."""

    x1: int
    y1: int
    x2: int
    y2: int
    label: str


@dataclass(frozen=True, slots=True)
class Diagram:
    """The laid-out tree; `drawn` is False when the graph is too big to draw."""

    nodes: tuple[PlacedNode, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int
    drawn: bool = True
    box_width: int = BOX_WIDTH
    box_height: int = BOX_HEIGHT


def children(node: GraphNode) -> tuple[tuple[str, str], ...]:
    """The node's children as (role, node id), in the order they are drawn."""
    config = _config(node.query) if node.node_type in ("IF", "LOOP", "JOIN") else {}
    condition = config.get("condition_node")
    extra = config.get("extra_nodes")
    extras = [x for x in extra if isinstance(x, str)] if isinstance(extra, list) else []
    if node.node_type == "IF":
        found = [("if", condition), ("then", node.left_node), ("else", node.right_node)]
    elif node.node_type == "LOOP":
        found = [("body", node.left_node), ("while", condition)]
    elif node.node_type in ("JOIN", "RACE"):
        branches = [node.left_node, node.right_node, *extras]
        found = [(f"branch {k}", child) for k, child in enumerate(branches, 1)]
    else:
        found = [("first", node.left_node), ("then", node.right_node)]
    return tuple((role, child) for role, child in found if isinstance(child, str))


def layout(nodes: Sequence[GraphNode], root: str) -> Diagram:
    """Place the tree under `root` (nodes it does not reach are left out)."""
    by_id = {node.node_id: node for node in nodes}
    if len(nodes) > MAX_DRAWN or root not in by_id:
        return Diagram((), (), 0, 0, drawn=False)
    columns: dict[str, float] = {}
    layers: dict[str, int] = {}
    edges: list[tuple[str, str, str]] = []
    below: dict[str, list[str]] = {}  # each node's children in the drawn tree
    next_column = 0
    # depth-first, iteratively: a node is placed after its children (post-order)
    stack: list[tuple[str, int, bool]] = [(root, 0, False)]
    seen = {root}
    while stack:
        node_id, layer, expanded = stack.pop()
        if not expanded:
            layers[node_id], below[node_id] = layer, []
            stack.append((node_id, layer, True))
            for role, child in reversed(children(by_id[node_id])):
                if child in by_id and child not in seen:  # a malformed graph may repeat one
                    seen.add(child)
                    below[node_id].insert(0, child)
                    edges.append((node_id, child, role))
                    stack.append((child, layer + 1, False))
            continue
        if below[node_id]:
            columns[node_id] = (columns[below[node_id][0]] + columns[below[node_id][-1]]) / 2
        else:
            columns[node_id], next_column = float(next_column), next_column + 1
    return _diagram(by_id, columns, layers, edges, below)


def _diagram(
    by_id: dict[str, GraphNode],
    columns: dict[str, float],
    layers: dict[str, int],
    edges: list[tuple[str, str, str]],
    below: dict[str, list[str]],
) -> Diagram:
    def x(node_id: str) -> int:
        return MARGIN + round(columns[node_id] * (BOX_WIDTH + COLUMN_GAP))

    def y(node_id: str) -> int:
        return MARGIN + layers[node_id] * (BOX_HEIGHT + LAYER_GAP)

    placed = tuple(
        PlacedNode(
            node_id,
            by_id[node_id].status,
            *_text(by_id[node_id]),
            x(node_id),
            y(node_id),
            tuple(below[node_id]),
            tuple(c for c in below[node_id] if by_id[c].status == "running"),
        )
        for node_id in columns
    )
    lines = tuple(
        Edge(x(p) + BOX_WIDTH // 2, y(p) + BOX_HEIGHT, x(c) + BOX_WIDTH // 2, y(c), role)
        for p, c, role in edges
    )
    width = 2 * MARGIN + round((max(columns.values()) + 1) * (BOX_WIDTH + COLUMN_GAP))
    height = 2 * MARGIN + (max(layers.values()) + 1) * (BOX_HEIGHT + LAYER_GAP) - LAYER_GAP
    return Diagram(placed, lines, width, height)


def _text(node: GraphNode) -> tuple[str, str]:
    """The box's two lines: type (and result name), then what the node does."""
    title = node.node_type + (f" |=> {node.result_name}" if node.result_name else "")
    return _cut(title), _cut(summary(node))


def summary(node: GraphNode) -> str:
    """One line saying what a leaf does (empty for nodes made of children)."""
    query = node.query or ""
    config = _config(query)
    if node.node_type == "SQL":
        return " ".join(query.split())
    if node.node_type == "SLEEP":
        return f"{query.strip()} s"
    if node.node_type == "SIGNAL":
        return f"wait for '{config.get('signal_name', query)}'"
    if node.node_type == "WAIT_SCHEDULE":
        return str(config.get("cron", config.get("schedule", query)))
    if node.node_type in ("HTTP", "HTTP_MULTIPART"):
        return f"{config.get('method', 'GET')} {config.get('url', '')}"
    if node.node_type == "BREAK":
        return query
    if node.node_type == "LOOP" and config.get("continue_on_failure") is True:
        return "continue on failure"
    return ""


def _config(query: str | None) -> dict[str, object]:
    try:
        value = json.loads(query or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _cut(text: str) -> str:
    if len(text) <= SUBTITLE_CHARACTERS:
        return text
    return text[: SUBTITLE_CHARACTERS - 1] + "…"
