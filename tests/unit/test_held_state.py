"""Planning from held state gives the plan a fresh load would give (engine/planner/held.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

from engine.in_step import InStep
from engine.planner.held import Planned, Planning, differences
from engine.planner.plan import ConsumedSignal, Plan, PlannedTask, TaskLease
from engine.records import Owner, Task
from tests.support.planner_state import document as _document
from tests.support.planner_state import node as _node
from tests.support.planner_state import stored_iteration

LEASE = TaskLease("engine-1", 30.0)


def _stored(doc: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """What df._apply_plan leaves in the database, loaded again."""
    stored = copy.deepcopy(doc)
    for node in stored["nodes"]:
        change = plan.nodes.get(node["id"])
        if change is not None:
            node.update(status=change["status"], raw=change["raw"], error=change["error"])
            node["iteration"] = stored_iteration(node, change)
    stored.update(status=plan.instance_status or doc["status"], events=plan.events)
    stored.update(execution_id=plan.execution_id, version=plan.version)
    return stored


def _complete(doc: dict[str, Any], node_id: str, raw: str) -> dict[str, Any]:
    done = copy.deepcopy(doc)
    for node in done["nodes"]:
        if node["id"] == node_id:
            node.update(status="completed", raw=raw)
    return done


def _comparable(plan: Plan, recorded: str | None = None) -> dict[str, Any]:
    """The plan without lease tokens; without the `recorded` step's completion entry, which
    a plan from memory carries and a loaded one leaves to df._record_step."""
    body = json.loads(plan.to_json())
    for task in body["tasks"]:
        task["lease_token"] = "token"
    completion = {"status": "completed", "error": None, "delivery": "exactly-once"}
    body["nodes"] = [
        n
        for n in body["nodes"]
        if n["id"] != recorded or any(n.get(k) != v for k, v in completion.items())
    ]
    for node in body["nodes"]:
        node.pop("delivery", None)
    return body


def _running_sql(plan: Plan) -> list[str]:
    return [t.node_id for t in plan.tasks if t.node_type == "SQL"]


def _check_equivalent(doc: dict[str, Any], finish: list[str]) -> Planning:
    """Hold the first advance, then finish steps one by one from memory; each plan must
    equal the one planned from the stored state, and the held state must equal it."""
    planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
    first = planning.from_document(json.dumps(doc))
    planning.hold(doc["id"], first)
    stored = _stored(doc, first.plan)
    for node_id in finish:
        raw = json.dumps({"rows": [{"step": node_id}], "row_count": 1})
        assert planning.holds(doc["id"])
        held = planning.snapshot(doc["id"])
        assert held is not None and differences(held, stored) == []
        from_memory = planning.completed_step(doc["id"], node_id, raw)
        assert from_memory is not None and from_memory.from_memory
        done = _complete(stored, node_id, raw)
        done["now"] = from_memory.instance["now"]
        loaded = Planning(LEASE, False, 0.0).from_document(json.dumps(done))
        assert _comparable(from_memory.plan, node_id) == _comparable(loaded.plan)
        assert from_memory.plan.nodes[node_id]["delivery"] == "exactly-once"
        planning.hold(doc["id"], from_memory)
        stored = _stored(done, from_memory.plan)
    return planning


def _sequence() -> list[dict[str, Any]]:
    """'SELECT 1' |=> 'x' ~> 'SELECT $x.step AS s' ~> 'SELECT 3'"""
    return [
        _node("r", "THEN", left="t", right="c"),
        _node("t", "THEN", left="a", right="b"),
        _node("a", "SQL", query="SELECT 1", name="x"),
        _node("b", "SQL", query="SELECT $x.step AS s"),
        _node("c", "SQL", query="SELECT 3"),
    ]


def test_a_sequence_plans_the_same_from_memory() -> None:
    planning = _check_equivalent(_document("r", _sequence()), ["a", "b", "c"])
    assert not planning.holds("0000abcd")  # finished: nothing is held any more


def test_a_join_plans_the_same_from_memory() -> None:
    nodes = [
        _node("r", "THEN", left="j", right="c"),
        _node("j", "JOIN", left="a", right="b"),
        _node("a", "SQL", query="SELECT 1"),
        _node("b", "SQL", query="SELECT 2"),
        _node("c", "SQL", query="SELECT 3"),
    ]
    planning = _check_equivalent(_document("r", nodes), ["b", "a", "c"])
    assert not planning.holds("0000abcd")


def test_a_loop_plans_the_same_from_memory() -> None:
    nodes = [
        _node("l", "LOOP", left="b", query='{"condition_node":"k"}'),
        _node("b", "SQL", query="SELECT 1"),
        _node("k", "SQL", query="SELECT false AS again"),
    ]
    # every step's result is a truthy row: the loop goes on, its body reset and run again
    planning = _check_equivalent(_document("l", nodes), ["b", "k", "b", "k", "b"])
    assert planning.holds("0000abcd")


def test_nothing_is_planned_for_a_step_the_held_state_does_not_run() -> None:
    planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
    doc = _document("a", [_node("a", "SQL", query="SELECT 1")])
    planning.hold(doc["id"], planning.from_document(json.dumps(doc)))
    assert planning.completed_step(doc["id"], "elsewhere", "{}") is None
    assert not planning.holds(doc["id"])  # taken out: only a committed plan holds it again
    assert planning.completed_step(doc["id"], "a", "{}") is None


def test_differences_name_what_disagrees() -> None:
    planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
    doc = _document("a", [_node("a", "SQL", query="SELECT 1")])
    first = planning.from_document(json.dumps(doc))
    planning.hold(doc["id"], first)
    held = planning.snapshot(doc["id"])
    assert held is not None
    stored = _stored(doc, first.plan)
    assert differences(held, stored) == []
    stored["nodes"][0]["status"] = "completed"
    stored["version"] = 7
    assert differences(held, stored) == [
        "version: held 1, stored 7",
        "node a status: held 'running', stored 'completed'",
    ]


def _first_and_done(doc: dict[str, Any], step: str, continuing: bool) -> tuple[Plan, Plan]:
    """A new instance's first plan and the plan once `step` completed, made as the first
    transaction makes them (the step's task is run there, so it leaves the first plan)."""
    planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
    first = planning.from_document(json.dumps(doc))
    first.plan.tasks = []
    before = copy.deepcopy(first.plan)
    raw = json.dumps({"rows": [{"step": step}], "row_count": 1})
    plan = first.plan if continuing else None
    done = planning.completed(first.after(), step, raw, plan)
    assert done is not None
    return before, done.plan


def test_a_first_plan_continued_by_its_step_leaves_what_both_plans_leave() -> None:
    doc = _document("r", _sequence())
    first, done = _first_and_done(doc, "a", continuing=False)
    assert first.can_continue()
    _, merged = _first_and_done(doc, "a", continuing=True)
    assert _stored(doc, merged) == _stored(_stored(doc, first), done)
    assert _comparable(merged)["tasks"] == _comparable(done)["tasks"]
    assert [t.node_id for t in merged.tasks] == ["b"]
    assert merged.instance_status == "running" and merged.nodes["a"]["status"] == "completed"


def test_a_one_step_workflow_finishes_in_one_plan() -> None:
    doc = _document("a", [_node("a", "SQL", query="SELECT 1")])
    first, done = _first_and_done(doc, "a", continuing=False)
    _, merged = _first_and_done(doc, "a", continuing=True)
    assert _stored(doc, merged) == _stored(_stored(doc, first), done)
    assert merged.instance_status == "completed" and merged.execution_status == "Completed"
    assert merged.output == done.output


def test_plans_with_tasks_or_timers_are_not_continued() -> None:
    plan = Plan()
    assert plan.can_continue()
    for change in (
        {"tasks": [PlannedTask("a", "SQL", "SELECT 1", "engine-1", "token", 30.0)]},
        {"cancel_nodes": ["a"]},
        {"consumed_signals": [ConsumedSignal(1, "a")]},
        {"drop_all_tasks": True},
        {"continued_from": 1},
        {"wake_at": 5.0},
    ):
        assert not Plan(**change).can_continue(), change  # type: ignore[arg-type]


def test_the_state_of_a_paused_instance_is_not_held() -> None:
    planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
    doc = _document("r", _sequence())
    planning.hold(doc["id"], planning.from_document(json.dumps(doc)))
    assert planning.holds(doc["id"])
    doc["status"] = "paused"  # df.resume will change the stored state: nothing kept
    planning.hold(doc["id"], planning.from_document(json.dumps(doc)))
    assert not planning.holds(doc["id"])


def _in_step_task(planning: Planning, doc: dict[str, Any], node_id: str) -> tuple[Planned, Task]:
    planning.hold(doc["id"], planning.from_document(json.dumps(doc)))
    raw = json.dumps({"rows": [], "row_count": 0})
    planned = planning.completed_step(doc["id"], node_id, raw)
    assert planned is not None
    return planned, Task(doc["id"], node_id, "SQL", None, "token", Owner(10, "alice"), "db")


def test_a_chained_step_is_alone_beside_the_step_its_plan_starts() -> None:
    """The plan of a step in a sequence starts the next step: the step still runs alone
    (InStep.alone), so its plan goes with its COMMIT unanswered."""
    planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
    planned, task = _in_step_task(planning, _document("r", _sequence()), "a")
    assert _running_sql(planned.plan) == ["b"]
    in_step = InStep(planning, None, (0, ""))
    assert in_step.alone(planned, task)
    assert in_step.next_step(planned) is planned.plan.tasks[0]


def test_a_branch_of_a_join_is_not_alone_while_the_other_runs() -> None:
    planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
    nodes = [
        _node("j", "JOIN", left="a", right="b"),
        _node("a", "SQL", query="SELECT 1"),
        _node("b", "SQL", query="SELECT 2"),
    ]
    planned, task = _in_step_task(planning, _document("j", nodes), "a")
    in_step = InStep(planning, None, (0, ""))
    assert not in_step.alone(planned, task)
    assert in_step.next_step(planned) is None
