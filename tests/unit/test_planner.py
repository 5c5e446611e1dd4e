"""The planner driven on in-memory state, without a database: each node type's transitions.

A small store stands in for the catalog: it applies a plan as df._apply_plan would (node
statuses, results, the instance's status, consumed signals) and records a task's result as
df._record_step would, so a workflow can be driven advance by advance.
"""

from __future__ import annotations

import json
from typing import Any

from engine.planner.held import Planning
from engine.planner.plan import ConsumedSignal, Plan, PlannedTask, TaskLease
from tests.support.planner_state import document, stored_iteration
from tests.support.planner_state import node as _node

LEASE = TaskLease("engine-1", 30.0)


def _sql(node_id: str, query: str = "SELECT 1", **fields: Any) -> dict[str, Any]:
    return _node(node_id, "SQL", query=query, **fields)


def _rows(value: object) -> str:
    return json.dumps({"rows": [{"v": value}], "row_count": 1}, separators=(",", ":"))


class Store:
    """One instance's stored state, changed as the catalog's functions change it."""

    def __init__(self, root: str, nodes: list[dict[str, Any]]) -> None:
        self.doc = document(root, nodes)
        self.tasks: dict[str, PlannedTask] = {}
        self.output: str | None = None

    def node(self, node_id: str) -> dict[str, Any]:
        return next(n for n in self.doc["nodes"] if n["id"] == node_id)

    def advance(self) -> Plan:
        planning = Planning(LEASE, allow_superuser=False, min_iteration=0.0)
        plan = planning.from_document(json.dumps(self.doc)).plan
        for change in plan.nodes.values():
            node = self.node(change["id"])
            node.update(status=change["status"], raw=change["raw"], error=change["error"])
            node["stamp"] = change.get("details", {}).get("execution_id", node.get("stamp"))
            node["iteration"] = stored_iteration(node, change)
            if change.get("iteration_started") is not None:
                node["iteration_started"] = change["iteration_started"]
        for task_id in plan.cancel_nodes:
            self.tasks.pop(task_id, None)
        if plan.drop_all_tasks:
            self.tasks.clear()
        self.tasks.update({t.node_id: t for t in plan.tasks})
        taken = {c.id for c in plan.consumed_signals}
        self.doc["signals"] = [s for s in self.doc["signals"] if s["id"] not in taken]
        self.doc.update(status=plan.instance_status or self.doc["status"], events=plan.events)
        self.doc.update(execution_id=plan.execution_id, version=plan.version)
        self.output = plan.output if plan.output is not None else self.output
        return plan

    def finish(self, node_id: str, raw: str) -> Plan:
        """A task's result recorded, then the advance it asks for."""
        del self.tasks[node_id]
        self.node(node_id).update(status="completed", raw=raw)
        return self.advance()

    def fail(self, node_id: str, error: str) -> Plan:
        del self.tasks[node_id]
        self.node(node_id).update(status="failed", error=error)
        return self.advance()

    def signal(self, name: str, data: object = None) -> Plan:
        ids = [s["id"] for s in self.doc["signals"]]
        self.doc["signals"].append({"id": max(ids, default=0) + 1, "name": name, "data": data})
        return self.advance()


def test_then_runs_its_children_in_turn_and_ends_with_the_second_result() -> None:
    store = Store("t", [_node("t", "THEN", left="a", right="b"), _sql("a"), _sql("b")])
    store.advance()
    assert list(store.tasks) == ["a"] and store.doc["status"] == "running"
    store.finish("a", _rows(1))
    assert list(store.tasks) == ["b"]
    store.finish("b", _rows(2))
    assert store.doc["status"] == "completed" and store.output == _rows(2)


def test_if_takes_one_branch_by_its_condition_and_never_starts_the_other() -> None:
    for truth, taken, skipped in (("true", "yes", "no"), ("false", "no", "yes")):
        store = Store(
            "i",
            [
                _node("i", "IF", query='{"condition_node": "c"}', left="yes", right="no"),
                _sql("c"),
                _sql("yes"),
                _sql("no"),
            ],
        )
        store.advance()
        store.finish("c", _rows(truth == "true"))
        assert list(store.tasks) == [taken]
        store.finish(taken, _rows(taken))
        assert store.doc["status"] == "completed" and store.node(skipped)["status"] == "pending"


def test_join_starts_every_branch_at_once_and_gathers_their_results_in_order() -> None:
    store = Store(
        "j",
        [_node("j", "JOIN", left="a", right="b", query='{"extra_nodes": ["c"]}')]
        + [_sql(n) for n in "abc"],
    )
    store.advance()
    assert sorted(store.tasks) == ["a", "b", "c"]
    store.finish("c", _rows("c"))
    store.finish("a", _rows("a"))
    assert store.doc["status"] == "running"
    store.finish("b", _rows("b"))
    assert store.output == "[" + ",".join(_rows(n) for n in "abc") + "]"


def test_a_failed_join_branch_fails_the_join_naming_the_branch() -> None:
    store = Store("j", [_node("j", "JOIN", left="a", right="b"), _sql("a"), _sql("b")])
    store.advance()
    store.finish("a", _rows(1))
    store.fail("b", "boom")
    assert store.doc["status"] == "failed" and store.output == "JOIN branch 2 failed: boom"


def test_race_ends_with_the_first_branch_to_finish_and_abandons_the_other() -> None:
    store = Store("r", [_node("r", "RACE", left="slow", right="fast"), _sql("slow"), _sql("fast")])
    store.advance()
    plan = store.finish("fast", _rows("fast"))
    assert "slow" in plan.cancel_nodes and "slow" not in store.tasks
    assert store.doc["status"] == "completed" and store.output == _rows("fast")


def test_a_loop_runs_its_body_again_until_a_break() -> None:
    store = Store(
        "l",
        [
            _node("l", "LOOP", left="body"),
            _node("body", "IF", query='{"condition_node": "c"}', left="stop", right="work"),
            _sql("c"),
            _node("stop", "BREAK", query='{"break_value": "\\"done\\""}'),
            _sql("work"),
        ],
    )
    store.advance()
    for _ in range(3):
        store.finish("c", _rows(False))
        store.finish("work", _rows("worked"))
        assert store.doc["status"] == "running" and list(store.tasks) == ["c"]
    store.finish("c", _rows(True))
    assert store.doc["status"] == "completed" and store.output == '"done"'


def test_a_sleep_is_a_timer_task_due_after_its_seconds() -> None:
    store = Store("s", [_node("s", "SLEEP", query="5")])
    store.advance()
    task = store.tasks["s"]
    assert task.delay == 5.0 and task.lease_owner is None


def test_one_signal_satisfies_one_wait() -> None:
    wait = _node("w1", "SIGNAL", query='{"signal_name": "go"}')
    store = Store(
        "t",
        [_node("t", "THEN", left="w1", right="w2"), wait, {**wait, "id": "w2"}],
    )
    store.advance()
    plan = store.signal("go", 1)
    assert plan.consumed_signals == [ConsumedSignal(id=1, node_id="w1")]
    assert store.node("w1")["status"] == "completed" and store.node("w2")["status"] == "running"
    assert json.loads(plan.to_json())["consumed_signals"] == [{"id": 1, "node_id": "w1"}]
    store.signal("go", 2)
    assert store.doc["status"] == "completed"


def test_a_cancelled_instance_drops_its_tasks_and_fails_its_execution() -> None:
    store = Store("t", [_node("t", "THEN", left="a", right="b"), _sql("a"), _sql("b")])
    store.advance()
    store.doc["status"] = "cancelled"
    plan = store.advance()
    assert plan.drop_all_tasks and not store.tasks
    assert plan.execution_status == "Failed" and plan.output == "Cancelled by user"


def test_a_node_the_planner_cannot_read_fails_the_instance_once() -> None:
    store = Store("t", [_node("t", "THEN", left="a", right="s"), _sql("a")])
    store.doc["nodes"].append(_node("s", "SLEEP", query="soon"))
    store.advance()
    plan = store.finish("a", _rows(1))
    assert plan.instance_status == "failed" and plan.drop_all_tasks and not plan.tasks
    assert "could not plan this instance" in (plan.output or "")
    assert store.advance().tasks == []  # a failed instance is not planned again


def _stamps(store: Store) -> dict[str, str]:
    return {n["id"]: str(n.get("stamp")).removeprefix("0000abcd::") for n in store.doc["nodes"]}


def test_branches_and_non_root_loops_run_in_scopes_stamped_per_generation() -> None:
    # 'a' ~> df.loop(('x' & df.loop(df.if('c', df.break(), 'm'))), 'lc')
    store = Store(
        "t",
        [
            _node("t", "THEN", left="a", right="L"),
            _sql("a"),
            _node("L", "LOOP", left="J", query='{"condition_node": "lc"}'),
            _node("J", "JOIN", left="x", right="M"),
            _sql("x"),
            _node("M", "LOOP", left="mb"),
            _node("mb", "IF", query='{"condition_node": "c"}', left="brk", right="m"),
            _sql("c"),
            _node("brk", "BREAK", query='{"break_value": null}'),
            _sql("m"),
            _sql("lc"),
        ],
    )
    store.advance()
    store.finish("a", _rows(1))
    for generation in (1, 2):
        scope = f"1::L::{generation}"
        store.finish("x", _rows(1))
        store.finish("c", _rows(False))
        store.finish("m", _rows(1))
        assert _stamps(store)["m"] == f"{scope}::M::1"
        store.finish("c", _rows(True))  # the branch's loop, in its second generation, breaks
        stamps = _stamps(store)
        assert stamps["x"] == f"{scope}::x::1" and stamps["J"] == scope
        assert stamps["M"] == stamps["c"] == stamps["brk"] == f"{scope}::M::2"
        store.finish("lc", _rows(generation == 1))
        assert _stamps(store)["lc"] == scope
    stamps = _stamps(store)
    assert stamps["t"] == stamps["a"] == stamps["L"] == "1" and store.doc["status"] == "completed"


def test_a_losing_loop_fails_in_its_branch_scope_whose_generations_are_its_iterations() -> None:
    # (df.loop('f') | 's') ~> 'after': the loop is its branch's root (one scope)
    store = Store(
        "T",
        [
            _node("T", "THEN", left="r", right="after"),
            _node("r", "RACE", left="F", right="s"),
            _node("F", "LOOP", left="f"),
            _sql("f"),
            _sql("s"),
            _sql("after"),
        ],
    )
    store.advance()
    assert _stamps(store)["F"] == _stamps(store)["f"] == "1::F::1"
    store.finish("f", _rows(1))
    assert _stamps(store)["F"] == _stamps(store)["f"] == "1::F::2"
    store.finish("s", _rows(1))
    loser = store.node("F")
    assert loser["status"] == "failed" and loser["error"] == LOSING_LOOP
    stamps = _stamps(store)
    assert stamps["F"] == "1::F::2" and stamps["s"] == "1::s::1" and stamps["after"] == "1"


def test_a_root_loop_is_the_instance_scope_and_its_branches_open_scopes_per_generation() -> None:
    # @> ('q' & 'u')
    store = Store(
        "R",
        [
            _node("R", "LOOP", left="J"),
            _node("J", "JOIN", left="q", right="u"),
            _sql("q"),
            _sql("u"),
        ],
    )
    store.advance()
    for generation in (1, 2):
        stamps = _stamps(store)
        assert stamps["R"] == stamps["J"] == str(generation)
        assert stamps["q"] == f"{generation}::q::1" and stamps["u"] == f"{generation}::u::1"
        store.finish("q", _rows(1))
        store.finish("u", _rows(1))


def test_a_loop_continuing_on_failure_records_the_failed_iteration_and_goes_on() -> None:
    # df.loop('w', 'c', continue_on_failure => true): each iteration's body in its own scope
    config = '{"condition_node": "c", "continue_on_failure": true}'
    nodes = [_node("l", "LOOP", left="w", query=config), _sql("w"), _sql("c")]
    store = Store("l", nodes)
    store.advance()
    store.fail("w", "boom")
    assert store.node("w")["status"] == "failed" and list(store.tasks) == ["c"]
    assert _stamps(store)["w"] == "1::w::1" and _stamps(store)["c"] == "1"
    store.finish("c", _rows(True))
    assert list(store.tasks) == ["w"] and _stamps(store)["w"] == "2::w::1"
    store.finish("w", _rows(1))
    store.finish("c", _rows(False))
    assert store.doc["status"] == "completed" and store.output == _rows(1)
    store = Store("l", [dict(n, status="pending") for n in nodes])
    store.advance()
    store.fail("w", "boom")
    store.fail("c", "bad condition")  # a failing condition stays fatal
    assert store.doc["status"] == "failed" and store.output == "bad condition"


LOSING_LOOP = "Loop branch cancelled after losing RACE"


def test_a_paused_instance_starts_nothing_and_goes_on_once_running_again() -> None:
    store = Store("t", [_node("t", "THEN", left="a", right="b"), _sql("a"), _sql("b")])
    store.advance()
    store.doc["status"] = "paused"  # df.pause while step a runs
    plan = store.finish("a", _rows(1))
    assert plan.nodes == {} and plan.tasks == [] and plan.instance_status is None
    assert store.tasks == {} and store.node("b")["status"] == "pending"
    store.doc["status"] = "running"  # df.resume
    store.advance()
    assert list(store.tasks) == ["b"]
    store.finish("b", _rows(2))
    assert store.doc["status"] == "completed" and store.output == _rows(2)


def test_steps_under_a_deadline_run_under_what_remains_of_it_and_a_second_more() -> None:
    """df.timeout(THEN(SQL, HTTP), 10) started at 1000: at 1004 the HTTP step asking for 30 s
    gets 7 s (6 left, a second of grace), the SQL step at 1000 a statement_timeout of 11 s;
    a step outside any deadline keeps its text."""
    http = _node("h", "HTTP", query='{"url": "https://example.com/", "timeout_seconds": 30}')
    store = Store(
        "t",
        [
            _node("t", "TIMEOUT", query='{"seconds": 10}', left="s"),
            _node("s", "THEN", left="a", right="h"),
            _sql("a"),
            http,
        ],
    )
    store.advance()
    assert store.tasks["a"].payload == "SET LOCAL statement_timeout = 11000; SELECT 1"
    store.doc["now"] = 1004.0
    store.finish("a", _rows(1))
    assert json.loads(store.tasks["h"].payload or "")["timeout_seconds"] == 7.0
    plain = Store("b", [_sql("b", "SELECT 2")])
    plain.advance()
    assert plain.tasks["b"].payload == "SELECT 2"
