"""The global cap on concurrently running SQL steps (--max-user-connections).

A slot is taken before a step connection and given back after it. A step that finishes
while another step waits for a slot may instead hand its slot over together with its
connection, whose last round trip began the waiting step's transaction (same owner and
database): the waiting step then sends no BEGIN and takes no connection from the pool.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from engine.connections.step_connection import StepConnection

SlotKey = tuple[int, str]  # (owner's role OID, database): as the pool keys connections


@dataclass(slots=True)
class _Waiter:
    key: SlotKey
    instance: str
    future: asyncio.Future[StepConnection | None]


class StepSlots:
    """A semaphore whose waiters may receive a connection with their slot, served in turns:
    the (owner, database) keys that wait take turns, and within a key its instances take
    turns, so that one owner's thousand parallel steps do not keep another owner's step
    waiting for all of them, nor one wide instance another instance of the same owner.
    An instance's own waiters are served in order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        # key -> instance -> waiters; both levels in turn order (the first is next)
        self._queues: dict[SlotKey, dict[str, deque[_Waiter]]] = {}

    @property
    def free(self) -> int:
        """Slots nobody holds or waits for."""
        return self._free

    async def take(
        self, key: SlotKey, instance: str = "", within: float | None = None
    ) -> StepConnection | None:
        """Wait for a slot; with it, a connection whose transaction was begun for `key`, or
        None (take one from the pool). TimeoutError when `within` seconds pass first."""
        if self._free > 0 and self._next_key() is None:
            self._free -= 1
            return None
        waiter = _Waiter(key, instance, asyncio.get_running_loop().create_future())
        self._queues.setdefault(key, {}).setdefault(instance, deque()).append(waiter)
        try:
            if within is not None:
                # asyncio.wait leaves the future alone, so a slot served just as the time
                # runs out is taken, never lost
                await asyncio.wait((waiter.future,), timeout=max(within, 0.0))
                if not waiter.future.done():
                    self._leave(waiter)
                    waiter.future.cancel()
                    raise TimeoutError
            return await waiter.future
        except asyncio.CancelledError:
            left = self._leave(waiter)
            if not left and waiter.future.done() and not waiter.future.cancelled():
                self.give()  # served as it was cancelled: pass it on (a handed-over
            waiter.future.cancel()  # connection is closed by its owner's close())
            raise

    @property
    def waiting(self) -> int:
        """Steps waiting for a slot now (for /metrics: counts every queue)."""
        return sum(
            not waiter.future.done()
            for instances in self._queues.values()
            for queue in instances.values()
            for waiter in queue
        )

    def wanted(self, key: SlotKey) -> bool:
        """Does a step wait for a slot to run as `key`?"""
        instances = self._queues.get(key)
        return instances is not None and self._live(instances)

    def hand(self, key: SlotKey, conn: StepConnection) -> bool:
        """Give the slot held with `conn`, and `conn`, to the next step waiting as `key`
        when it is `key`'s turn; False (nothing done) when none waits or another key's
        turn comes first."""
        if self._next_key() != key:
            return False
        self._serve(key).future.set_result(conn)
        return True

    def give(self) -> None:
        """Give a slot back: to the waiter whose turn it is, else to the free ones. (A waiter
        cancelled a moment ago is still queued, its future already cancelled: it is passed
        over.)"""
        key = self._next_key()
        if key is None:
            self._free += 1
            return
        self._serve(key).future.set_result(None)

    def _next_key(self) -> SlotKey | None:
        """The key whose turn is next (cancelled waiters dropped on the way)."""
        while self._queues:
            key, instances = next(iter(self._queues.items()))
            if self._live(instances):
                return key
            del self._queues[key]
        return None

    @staticmethod
    def _live(instances: dict[str, deque[_Waiter]]) -> bool:
        """Does one of these instances have a waiter left? Cancelled waiters at the head of
        the first queues are dropped on the way, and queues left empty (amortised O(1))."""
        while instances:
            instance, queue = next(iter(instances.items()))
            while queue and queue[0].future.done():
                queue.popleft()
            if queue:
                return True
            del instances[instance]
        return False

    def _serve(self, key: SlotKey) -> _Waiter:
        """Take the next waiter of `key` (call after _next_key found it): of its first
        instance, which then goes to the end of the key's turns, as the key of all keys'."""
        instances = self._queues.pop(key)
        instance = next(iter(instances))
        queue = instances.pop(instance)
        waiter = queue.popleft()
        if queue:
            instances[instance] = queue
        if instances:
            self._queues[key] = instances
        return waiter

    def _leave(self, waiter: _Waiter) -> bool:
        """Take a cancelled waiter out of its queue; False when it was no longer there."""
        instances = self._queues.get(waiter.key, {})
        queue = instances.get(waiter.instance)
        if queue is None or waiter not in queue:
            return False
        queue.remove(waiter)
        if not queue:
            del instances[waiter.instance]
            if not instances:
                del self._queues[waiter.key]
        return True
