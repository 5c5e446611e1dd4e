"""Compound nodes: THEN, IF, JOIN, RACE, LOOP and BREAK (§6.4–§6.7).

Each handler drives its children through the planner and decides the node's outcome; the
planner records every transition in the plan that the engine commits.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine.planner.kinds import COMPLETED, LOOP, PENDING
from engine.planner.outcomes import WAITING, Broke, Done, Failed, Node, Outcome
from engine.planner.truth import result_is_true

if TYPE_CHECKING:
    from engine.planner.graph import Planner

MAX_ITERATIONS = 100_000


def then(p: Planner, node: Node) -> Outcome:
    p.start(node)
    first = p.drive(node.left)
    if not isinstance(first, Done):
        return WAITING if first is None else p.complete(node, first)
    second = p.drive(node.right)
    return WAITING if second is None else p.complete(node, second)


def if_(p: Planner, node: Node) -> Outcome:
    p.start(node)
    config = node.config()
    if "condition_node" in config:
        condition = p.drive(str(config["condition_node"]))
        if not isinstance(condition, Done):
            return WAITING if condition is None else p.complete(node, condition)
        chosen = node.left if result_is_true(condition.raw) else node.right
    else:
        decided = _has_rows(p, node, str(config.get("result_name", "")))
        if isinstance(decided, Failed):
            return p.complete(node, decided)
        chosen = node.left if decided else node.right
    outcome = p.drive(chosen)
    return WAITING if outcome is None else p.complete(node, outcome)


def _has_rows(p: Planner, node: Node, name: str) -> bool | Failed:
    raw = p.named_results(node).get(name)
    if raw is None:
        return Failed(f"df.if_rows: result '{name}' not found")
    value = json.loads(raw)
    if not isinstance(value, dict) or "row_count" not in value:
        return Failed(f"df.if_rows: result '{name}' is not a SQL result (missing row_count)")
    return int(value["row_count"]) > 0


def branches(node: Node) -> list[str]:
    """The branch roots of a JOIN or RACE, in order."""
    extra = node.config().get("extra_nodes", [])
    ids = [node.left, node.right, *(extra if isinstance(extra, list) else [])]
    return [str(i) for i in ids if i]


def join(p: Planner, node: Node) -> Outcome:
    p.start(node)
    outcomes = [p.drive_child(node, b) for b in branches(node)]
    for outcome in outcomes:
        if isinstance(outcome, Broke):
            return p.complete(node, outcome)
    if any(o is None for o in outcomes):
        return WAITING
    for index, outcome in enumerate(outcomes, start=1):
        if isinstance(outcome, Failed):
            return p.complete(node, Failed(f"JOIN branch {index} failed: {outcome.error}"))
    raws = [o.raw for o in outcomes if isinstance(o, Done)]
    return p.complete(node, Done("[" + ",".join(raws) + "]"))


def race(p: Planner, node: Node) -> Outcome:
    p.start(node)
    sides = [("left", node.left), ("right", node.right)]
    for side, child in sides:
        outcome = p.drive_child(node, child)
        if outcome is None:
            continue
        for _, loser in sides:
            if loser != child and loser is not None:
                p.abandon(node, loser, "Loop branch cancelled after losing RACE")
        if isinstance(outcome, Failed):
            return p.complete(node, Failed(f"RACE {side} branch failed: {outcome.error}"))
        return p.complete(node, outcome)
    return WAITING


def break_(p: Planner, node: Node) -> Outcome:
    value = node.config().get("break_value")
    raw = "null" if value is None else _break_raw(str(value))
    p.start(node)
    p.set_status(node, COMPLETED, raw=raw)
    return Broke(raw)


def _break_raw(value: str) -> str:
    try:
        return json.dumps(json.loads(value), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return json.dumps(value, ensure_ascii=False)


def continues_on_failure(node: Node) -> bool:
    """A loop made with continue_on_failure => true (pg_durable 0.2.8): a failed iteration
    is recorded and the loop goes on; its body runs in a scope of its own."""
    return node.type == LOOP and node.config().get("continue_on_failure") is True


def loop(p: Planner, node: Node) -> Outcome:
    if node.status == PENDING:
        p.start(node)
        p.begin_iteration(node, first=True)
    body = p.drive_child(node, node.left)
    if body is None:
        return WAITING
    if isinstance(body, Broke):
        return p.complete(node, Done(body.raw))
    config = node.config()
    if isinstance(body, Failed):
        if config.get("continue_on_failure") is not True:
            return p.complete(node, body)
        body = Done("null")  # the failed iteration stays recorded on its nodes
    condition_id = config.get("condition_node")
    if condition_id is not None:
        condition = p.drive_child(node, str(condition_id))
        if condition is None:
            return WAITING
        if isinstance(condition, Broke):
            return p.complete(node, Done(condition.raw))
        if isinstance(condition, Failed):
            return p.complete(node, condition)
        if not result_is_true(condition.raw):
            return p.complete(node, body)
    return _next_iteration(p, node)


def _next_iteration(p: Planner, node: Node) -> Outcome:
    if node.iteration + 1 >= MAX_ITERATIONS:
        return p.complete(
            node,
            Failed(
                f"Loop exceeded maximum iteration count of {MAX_ITERATIONS}. "
                "Use df.break() to exit the loop or restructure the workflow."
            ),
        )
    due = (node.iteration_started or 0.0) + p.min_iteration_seconds
    if due > p.now:
        p.wake_at(due)
        return WAITING
    p.begin_iteration(node, first=False)
    return loop(p, node)
