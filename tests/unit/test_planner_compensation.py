"""COMPENSATED nodes in the planner: the order of completion decides the order of undos."""

from __future__ import annotations

from tests.support.planner_state import node as _node
from tests.unit.test_planner import Store, _rows, _sql


def _pair(node_id: str, forward: str, undo: str) -> dict[str, object]:
    return _node(node_id, "COMPENSATED", left=forward, right=undo)


def _saga() -> Store:
    """(a <-> ua & b <-> ub) ~> c"""
    return Store(
        "t",
        [
            _node("t", "THEN", left="j", right="c"),
            _node("j", "JOIN", left="pa", right="pb"),
            _pair("pa", "a", "ua"),
            _pair("pb", "b", "ub"),
            *(_sql(i) for i in ("a", "ua", "b", "ub", "c")),
        ],
    )


def test_undos_run_one_at_a_time_latest_completion_first() -> None:
    store = _saga()
    store.advance()
    assert sorted(store.tasks) == ["a", "b"]
    store.finish("b", _rows(2))
    store.finish("a", _rows(1))
    assert list(store.tasks) == ["c"]
    store.fail("c", "boom")
    assert list(store.tasks) == ["ua"] and store.doc["status"] == "running"
    store.finish("ua", _rows(0))
    assert list(store.tasks) == ["ub"] and store.doc["status"] == "running"
    store.finish("ub", _rows(0))
    assert store.doc["status"] == "compensated" and store.output == "boom"


def test_a_failed_undo_fails_the_instance_and_the_rest_stay_undone() -> None:
    store = _saga()
    store.advance()
    store.finish("a", _rows(1))
    store.finish("b", _rows(2))
    store.fail("c", "boom")
    assert list(store.tasks) == ["ub"]
    store.fail("ub", "undo broke")
    assert store.doc["status"] == "failed" and not store.tasks
    assert store.output == (
        "compensation failed: undo node ub failed: undo broke; original error: boom"
    )
    assert store.node("ua")["status"] == "pending"


def test_a_failure_before_any_forward_completed_just_fails() -> None:
    store = _saga()
    store.advance()
    store.fail("a", "early")
    assert store.doc["status"] == "running"  # the JOIN waits for b
    store.finish("b", _rows(2))
    assert list(store.tasks) == ["ub"]  # b completed: it is undone
    store.finish("ub", _rows(0))
    assert store.doc["status"] == "compensated"
    store2 = Store("p", [_pair("p", "a", "ua"), _sql("a"), _sql("ua")])
    store2.advance()
    store2.fail("a", "early")
    assert store2.doc["status"] == "failed" and store2.output == "early"


def test_a_pair_inside_an_undo_is_not_undone_itself() -> None:
    store = Store(
        "t",
        [
            _node("t", "THEN", left="p", right="c"),
            _pair("p", "a", "q"),
            _pair("q", "ua", "uua"),
            *(_sql(i) for i in ("a", "ua", "uua", "c")),
        ],
    )
    store.advance()
    store.finish("a", _rows(1))
    store.fail("c", "boom")
    assert list(store.tasks) == ["ua"]
    store.finish("ua", _rows(0))
    assert store.doc["status"] == "compensated" and store.node("uua")["status"] == "pending"
