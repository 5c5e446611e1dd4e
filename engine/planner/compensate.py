"""COMPENSATED (`forward <-> undo`, df.with_undo): saga compensation, as pg_durable proposes
it (spec-compensation.md).

A COMPENSATED node runs its forward and passes its outcome through. When the forward
completes, the node records its place in the order of completion (its iteration: one more
than the latest so far; stored with the node, durable as any transition). When the
instance fails (its root failed), the planner does not finish it yet: it runs the undos of
the completed forwards one at a time, the latest completion first. Each undo is an ordinary
subgraph, so its steps follow the retry policy and can read the named results the forwards
produced. All undone: the instance ends `compensated`. An undo failed: the instance fails,
the error naming the undo node and carrying the original error too.

Undos of forwards that ran in parallel branches run one at a time as well, in the order the
forwards completed. A COMPENSATED node completing while the instance compensates (one inside
an undo) gets no place: it is never undone itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.planner.kinds import COMPLETED, FAILED, NodeType
from engine.planner.outcomes import WAITING, Failed, Node, Outcome

if TYPE_CHECKING:
    from engine.planner.graph import Planner

COMPENSATED = NodeType.COMPENSATED
UNDO_FAILED = "compensation failed: undo node {undo} failed: {error}; original error: {original}"


@dataclass(frozen=True, slots=True)
class Undone:
    """Every completed forward was undone after the instance failed with `error`."""

    error: str


def compensated(p: Planner, node: Node) -> Outcome:
    """Drive the forward; on completion, take the next place in the order of completion."""
    p.start(node)
    outcome = p.drive(node.left)
    if outcome is WAITING:
        return WAITING
    result = p.complete(node, outcome)
    if not isinstance(outcome, Failed) and not _compensating(p):
        place = 1 + max((n.iteration for n in _completed_forwards(p)), default=0)
        node.iteration = place
        p.plan.nodes[node.id]["iteration"] = place
    return result


def _compensating(p: Planner) -> bool:
    root = p.nodes.get(p.instance["root"])
    return root is not None and root.status == FAILED


def _completed_forwards(p: Planner) -> list[Node]:
    return [
        n
        for n in p.nodes.values()
        if n.type == COMPENSATED and n.status == COMPLETED and n.iteration > 0
    ]


def has_forwards(p: Planner) -> bool:
    """Whether any forward completed (so that a failure is compensated, not final)."""
    return bool(_completed_forwards(p))


def undo(p: Planner, failure: Failed) -> Undone | Failed | None:
    """After the root failed with `failure`: run the next undo (WAITING while one runs), a
    failed undo's error, or Undone once every completed forward's undo has completed."""
    for forward in sorted(_completed_forwards(p), key=lambda n: n.iteration, reverse=True):
        outcome = p.drive(forward.right)
        if outcome is WAITING:
            return WAITING
        if isinstance(outcome, Failed):
            return Failed(
                UNDO_FAILED.format(undo=forward.right, error=outcome.error, original=failure.error)
            )
    return Undone(failure.error)
