"""RETRY and TIMEOUT: a failure policy and a deadline for one subgraph (df.retry, df.timeout).

A TIMEOUT records when its subgraph started (the node's iteration_started) and asks for an
advance at its deadline (the plan's wake_at: a df._advance row, durable as any). An advance
at or after the deadline that finds the subgraph unfinished abandons it as a RACE abandons
its loser (its tasks go, its running SQL is cancelled through pg_cancel_backend, its HTTP
requests dropped) and fails the TIMEOUT with SQLSTATE 57014's text.

A RETRY passes its subgraph's outcome through. Its steps read its policy when they fail
(df._step_policy: the nearest RETRY decides), so a failing step is retried in place; a
subgraph that failed because a TIMEOUT in it expired is reset and run again, after the
policy's backoff, while attempts are left (the attempt in the node's iteration, the time of
the next in its iteration_started).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from engine.planner.kinds import COMPLETED, FAILED, PENDING
from engine.planner.outcomes import WAITING, Failed, Node, Outcome

if TYPE_CHECKING:
    from engine.planner.graph import Planner

# SQLSTATE 57014 (query_canceled) is PostgreSQL's for a statement_timeout; the text names it
EXPIRED = "canceling statement due to timeout: df.timeout({seconds} s) expired (SQLSTATE 57014)"
EXPIRED_MARK = "expired (SQLSTATE 57014)"


def _number(config: dict[str, object], key: str) -> float | None:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _restart(p: Planner, node: Node) -> None:
    """Mark a wrapper node running from now (again, after a reset)."""
    if node.status == PENDING:
        p.start(node)
        node.iteration_started = p.now
        p.plan.nodes[node.id]["iteration_started"] = p.now


def timeout(p: Planner, node: Node) -> Outcome:
    seconds = _number(node.config(), "seconds")
    if seconds is None:
        p.start(node)
        return p.complete(node, Failed("TIMEOUT node requires a positive number of seconds"))
    _restart(p, node)
    child = p.nodes.get(node.left or "")
    if child is not None and child.status in (COMPLETED, FAILED):
        return _through(p, node, p.drive(node.left))
    deadline = (node.iteration_started or p.now) + seconds
    if p.now >= deadline:
        return _expire(p, node, seconds)
    outer = p.deadline
    p.deadline = deadline if outer is None else min(outer, deadline)
    try:  # the steps started now run under what remains (leaves.py)
        outcome = p.drive(node.left)
    finally:
        p.deadline = outer
    if outcome is WAITING:
        p.wake_at(deadline)
        return WAITING
    return _through(p, node, outcome)


def _expire(p: Planner, node: Node, seconds: float) -> Outcome:
    error = EXPIRED.format(seconds=f"{seconds:g}")
    if node.left is not None:
        p.abandon(node, node.left, error)
    return p.complete(node, Failed(error))


def _through(p: Planner, node: Node, outcome: Outcome) -> Outcome:
    return WAITING if outcome is WAITING else p.complete(node, outcome)


def retry(p: Planner, node: Node) -> Outcome:
    config = node.config()
    _restart(p, node)
    if node.iteration_started is not None and p.now < node.iteration_started:
        p.wake_at(node.iteration_started)  # waiting for the next attempt
        return WAITING
    outcome = p.drive(node.left)
    if not isinstance(outcome, Failed) or EXPIRED_MARK not in outcome.error:
        return _through(p, node, outcome)
    attempts = config.get("max_attempts")
    if not isinstance(attempts, int) or node.iteration + 1 >= attempts:
        return p.complete(node, outcome)
    due = p.now + _backoff(config, node.iteration + 1)
    _reset_below(p, node)
    node.iteration += 1
    node.iteration_started = due
    entry = p.plan.nodes.setdefault(
        node.id, {"id": node.id, "status": node.status, "raw": None, "error": None}
    )
    entry.update(iteration=node.iteration, iteration_started=due)
    p.wake_at(due)
    return WAITING


def _backoff(config: dict[str, object], attempt: int) -> float:
    """Seconds before attempt `attempt` + 1: df._fail_or_retry's exponential backoff with
    equal jitter."""
    cap = _number(config, "max_backoff") or 16.0
    first = min(_number(config, "initial_backoff") or 1.0, cap)
    base: float = min(cap, first * 2.0 ** min(attempt - 1, 60))
    return base / 2 + random.random() * base / 2


def _reset_below(p: Planner, node: Node) -> None:
    """Every node of the subgraph back to pending, for another attempt (rows reused)."""
    for below in p.subtree(node.left):
        if below.status != PENDING:
            p.reset(below)
