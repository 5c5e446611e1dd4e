"""The step-slot cap: waiters in order, hand-overs with a connection, cancelled waiters."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from engine.connections.slots import StepSlots

ALICE = ("alice", "db")
BOB = ("bob", "db")
CONN = cast(Any, object())  # stands for a step connection: the slots only pass it on


def _run(test: Any) -> None:
    asyncio.run(test())


def test_free_slots_are_taken_at_once_then_waiters_are_served_in_order() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        assert await slots.take(ALICE) is None and slots.free == 0
        first = asyncio.ensure_future(slots.take(BOB))
        second = asyncio.ensure_future(slots.take(ALICE))
        await asyncio.sleep(0)
        assert slots.wanted(BOB) and slots.wanted(ALICE) and not first.done()
        slots.give()
        assert await first is None and not second.done()
        slots.give()
        assert await second is None
        slots.give()
        assert slots.free == 1 and not slots.wanted(ALICE)

    _run(test)


def test_a_slot_is_handed_over_with_its_connection_to_a_waiter_of_that_owner() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        alice = asyncio.ensure_future(slots.take(ALICE))
        bob = asyncio.ensure_future(slots.take(BOB))
        await asyncio.sleep(0)
        assert slots.hand(ALICE, CONN)  # alice's turn: her waiter gets slot and connection
        handed = await alice
        assert handed is CONN
        assert not slots.hand(ALICE, CONN)  # nobody else waits as alice: nothing done
        slots.give()
        assert await bob is None and slots.free == 0

    _run(test)


def test_a_hand_over_does_not_jump_another_owners_turn() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        bob = asyncio.ensure_future(slots.take(BOB))
        alice = asyncio.ensure_future(slots.take(ALICE))
        await asyncio.sleep(0)
        assert not slots.hand(ALICE, CONN)  # bob's turn first
        slots.give()
        assert await bob is None
        assert slots.hand(ALICE, CONN)
        assert await alice is CONN

    _run(test)


def test_owners_take_turns_so_a_wide_graph_does_not_starve_another_owners_step() -> None:
    """One owner's 5,000 parallel steps queued first; another owner's hello world waited
    behind all of them (15 minutes in an adversarial run). It now waits for one turn."""

    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        wide = [asyncio.ensure_future(slots.take(ALICE)) for _ in range(50)]
        await asyncio.sleep(0)
        hello = asyncio.ensure_future(slots.take(BOB))
        await asyncio.sleep(0)
        slots.give()
        await asyncio.sleep(0)
        assert wide[0].done() and not hello.done()
        slots.give()
        await asyncio.sleep(0)
        assert hello.done() and not wide[1].done()
        for future in wide:
            future.cancel()
        await asyncio.gather(*wide, return_exceptions=True)

    _run(test)


def test_instances_of_one_owner_take_turns_too() -> None:
    """A wide instance's queued steps do not keep another instance of the same owner
    waiting behind all of them."""

    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE, "wide")
        wide = [asyncio.ensure_future(slots.take(ALICE, "wide")) for _ in range(20)]
        await asyncio.sleep(0)
        other = asyncio.ensure_future(slots.take(ALICE, "other"))
        await asyncio.sleep(0)
        assert slots.hand(ALICE, CONN)  # alice's turn: her next instance's waiter
        await asyncio.sleep(0)
        assert wide[0].done() and not other.done()
        slots.give()
        await asyncio.sleep(0)
        assert other.done() and not wide[1].done()
        for future in wide:
            future.cancel()
        await asyncio.gather(*wide, return_exceptions=True)

    _run(test)


def test_a_free_slot_is_taken_at_once_even_if_cancelled_waiters_are_still_queued() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        gone = asyncio.ensure_future(slots.take(BOB))
        await asyncio.sleep(0)
        gone.cancel()  # not yet run its cleanup: still queued, future cancelled
        slots.give()
        assert slots.free == 1
        assert await asyncio.wait_for(slots.take(ALICE), 1) is None

    _run(test)


def test_a_cancelled_waiter_leaves_and_one_served_as_it_was_cancelled_passes_it_on() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        gone = asyncio.ensure_future(slots.take(BOB))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert not slots.wanted(BOB)
        late = asyncio.ensure_future(slots.take(BOB))
        await asyncio.sleep(0)
        slots.give()  # served ...
        late.cancel()  # ... and cancelled before it ran: the slot must not be lost
        with pytest.raises(asyncio.CancelledError):
            await late
        assert slots.free == 1

    _run(test)


def test_a_slot_given_back_passes_over_a_waiter_cancelled_a_moment_ago() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        gone = asyncio.ensure_future(slots.take(ALICE))
        stays = asyncio.ensure_future(slots.take(BOB))
        await asyncio.sleep(0)
        gone.cancel()  # its future is cancelled now; the task has not run its cleanup yet
        assert not slots.wanted(ALICE)
        assert not slots.hand(ALICE, CONN)
        slots.give()
        assert await stays is None
        with pytest.raises(asyncio.CancelledError):
            await gone
        slots.give()
        assert slots.free == 1

    _run(test)


def test_a_waiter_out_of_time_leaves_the_queue_and_the_next_give_is_not_lost() -> None:
    """--execution-acquire-timeout: the wait ends with TimeoutError, nothing held."""

    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        with pytest.raises(TimeoutError):
            await slots.take(BOB, "late", within=0.01)
        assert not slots.wanted(BOB)
        slots.give()
        assert slots.free == 1
        assert await slots.take(BOB, within=0) is None  # free: taken at once

    _run(test)


def test_a_waiter_served_within_its_time_gets_the_slot_and_a_handed_connection() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        waiting = asyncio.ensure_future(slots.take(ALICE, within=5))
        await asyncio.sleep(0)
        assert slots.hand(ALICE, CONN)
        assert await waiting is CONN and slots.free == 0

    _run(test)


def test_the_steps_waiting_for_a_slot_are_counted_for_metrics() -> None:
    async def test() -> None:
        slots = StepSlots(1)
        await slots.take(ALICE)
        waiters = [asyncio.ensure_future(slots.take(owner, "i")) for owner in (ALICE, BOB)]
        await asyncio.sleep(0)
        assert (slots.size - slots.free, slots.waiting) == (1, 2)
        waiters[0].cancel()
        await asyncio.sleep(0)
        assert slots.waiting == 1  # a cancelled waiter is not counted
        slots.give()
        assert await waiters[1] is None and slots.waiting == 0

    _run(test)
