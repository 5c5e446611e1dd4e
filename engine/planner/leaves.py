"""Leaf nodes: SQL and HTTP steps, SLEEP, WAIT_SCHEDULE and SIGNAL (§6.2, §6.3, §6.8).

A leaf that runs elsewhere becomes a task of the plan (leased to the planning engine, or
due later for a timer); a SIGNAL is answered from the instance's signals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.planner.http_config import HttpConfigError, compact, substituted_config
from engine.planner.kinds import PENDING, RUNNING
from engine.planner.outcomes import WAITING, Done, Failed, Node, Outcome
from engine.planner.plan import ConsumedSignal, PlannedTask
from engine.planner.schedule import next_tick
from engine.planner.substitute import SubstitutionError, substitute_results, substitute_vars

if TYPE_CHECKING:
    from engine.planner.graph import Planner

DEFAULT_HTTP_TIMEOUT = 30  # seconds, an HTTP step's timeout_seconds when it names none


def leaf_task(p: Planner, node: Node, payload: str | None, due_in: float | None = None) -> Outcome:
    if node.status == RUNNING:
        return WAITING
    p.set_status(node, RUNNING)
    p.plan.events += 2  # the terminal transition, recorded when the task finishes
    lease = p.lease
    if due_in is None:
        task = PlannedTask(node.id, node.type, payload, lease.owner, p.new_token(), lease.seconds)
    else:  # a timer: no lease until the scheduler claims it once due
        task = PlannedTask(node.id, node.type, payload, None, None, lease.seconds, due_in)
    p.plan.tasks.append(task)
    return WAITING


# A step under a df.timeout also runs under PostgreSQL's statement_timeout (an HTTP step
# under its own timeout) of what remains of the deadline, and this much more: the durable
# deadline normally cancels it first, with df.timeout's own error; the step's own limit is
# the backstop for a step left running while no engine is there to cancel it.
DEADLINE_GRACE_SECONDS = 1.0


def sql(p: Planner, node: Node) -> Outcome:
    return _step(p, node, lambda: _within_deadline(p, p.substitute(node.query or "", node)))


def _within_deadline(p: Planner, text: str) -> str:
    """The step's SQL, after a SET LOCAL statement_timeout when a deadline is around it
    (the step's transaction then runs both; its result is the last statement's)."""
    left = _time_left(p)
    if left is None:
        return text
    return f"SET LOCAL statement_timeout = {max(1, round(left * 1000))}; {text}"


def _time_left(p: Planner) -> float | None:
    if p.deadline is None:
        return None
    return max(0.001, p.deadline - p.now) + DEADLINE_GRACE_SECONDS


def http(p: Planner, node: Node) -> Outcome:
    return _step(p, node, lambda: _http_payload(p, node))


def _http_payload(p: Planner, node: Node) -> str:
    """HTTP/HTTP_MULTIPART: the node's config with raw-text substitution (§6.3)."""
    inst, results = p.instance, p.named_results(node)

    def sub(text: str) -> str:
        text = substitute_vars(text, inst["vars"], inst["id"], inst["label"])
        return substitute_results(text, results, raw=True)

    payload = substituted_config(node.type, node.id, node.query, sub)
    left = _time_left(p)
    if left is None:
        return payload
    config = json.loads(payload)
    asked = config.get("timeout_seconds", DEFAULT_HTTP_TIMEOUT)
    if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > left:
        config["timeout_seconds"] = round(left, 3)  # (a bad value is the executor's to refuse)
    return compact(config)


def _step(p: Planner, node: Node, payload: Callable[[], str]) -> Outcome:
    """A leaf that runs as an activity (SQL, HTTP), its payload substituted now."""
    if node.status == RUNNING:
        return WAITING
    try:
        text = payload()
    except (SubstitutionError, HttpConfigError) as exc:
        p.set_status(node, RUNNING)
        return p.complete(node, Failed(str(exc)))
    p.plan.events += 2  # the execute-sql / execute-http activity
    return leaf_task(p, node, text)


def sleep(p: Planner, node: Node) -> Outcome:
    return leaf_task(p, node, node.query, due_in=float(node.query or 0))


def wait_schedule(p: Planner, node: Node) -> Outcome:
    cron = json.loads(node.query or "{}").get("cron_expr", "")
    try:
        due = next_tick(cron, p.now)
    except (ValueError, KeyError) as exc:
        p.start(node)
        return p.complete(node, Failed(f"Invalid cron expression '{cron}': {exc}"))
    return leaf_task(p, node, '{"scheduled": true}', due_in=due - p.now)


def signal(p: Planner, node: Node) -> Outcome:
    config = json.loads(node.query or "{}")
    name, timeout = config.get("signal_name"), config.get("timeout_seconds")
    if node.status == PENDING:
        p.set_status(node, RUNNING)
        node.iteration_started = p.now
        p.plan.nodes[node.id]["iteration_started"] = p.now
    for sig in p.instance.get("signals", []):
        if sig["name"] == name and not sig.get("taken"):
            sig["taken"] = True
            p.plan.consumed_signals.append(ConsumedSignal(sig["id"], node.id))
            return p.complete(node, Done(_signal_result(name, False, sig["data"])))
    if timeout is not None:
        due = (node.iteration_started or p.now) + float(timeout)
        if p.now >= due:
            return p.complete(node, Done(_signal_result(name, True, None)))
        p.wake_at(due)
    return WAITING


def _signal_result(name: str, timed_out: bool, data: Any) -> str:
    value = {"signal_name": name, "timed_out": timed_out, "data": data}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
