"""The queue of instances to advance: batches in flight at once, an instance in at most one
of them (engine/scheduler.py, AdvanceQueue)."""

from __future__ import annotations

from typing import Any, cast

from engine.scheduler import ADVANCE_BATCH, AdvanceQueue


def _queue() -> AdvanceQueue:
    return AdvanceQueue(cast(Any, None))  # the store is only read by retry_locked


def test_an_instance_asked_for_again_while_its_batch_runs_waits_for_that_batch() -> None:
    queue = _queue()
    for instance in ("a", "b"):
        queue.request(instance)
    first = queue.take()
    assert first == ["a", "b"] and queue.advancing == 1
    queue.request("b")  # a step of b finished while its batch is in flight
    queue.request("c")
    assert queue.take() == ["c"]  # b is left for after its batch
    assert queue.advancing == 2 and list(queue.waiting) == ["b"]
    queue.ready.clear()
    queue.advanced(first)
    assert queue.ready.is_set() and queue.advancing == 1
    assert queue.take() == ["b"]


def test_a_batch_takes_at_most_advance_batch_instances_in_arrival_order() -> None:
    queue = _queue()
    for n in range(ADVANCE_BATCH + 3):
        queue.request(f"{n:08x}")
    batch = queue.take()
    assert batch == [f"{n:08x}" for n in range(ADVANCE_BATCH)]
    assert queue.take() == [f"{n:08x}" for n in range(ADVANCE_BATCH, ADVANCE_BATCH + 3)]
    assert queue.take() == [] and queue.advancing == 2  # an empty take starts no batch
