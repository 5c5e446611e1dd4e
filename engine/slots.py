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

import asyncpg

SlotKey = tuple[str, str]  # (owner, database)


@dataclass(slots=True)
class _Waiter:
    key: SlotKey
    future: asyncio.Future[asyncpg.Connection | None]


class StepSlots:
    """A semaphore whose waiters may receive a connection with their slot, served in turn by
    (owner, database): one waiter of each key that waits, then the next key, so that one
    owner's thousand parallel steps do not keep another owner's step waiting for all of
    them. Within a key, waiters are served in order."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._queues: dict[SlotKey, deque[_Waiter]] = {}  # in turn order: first key is next

    @property
    def free(self) -> int:
        """Slots nobody holds or waits for."""
        return self._free

    def locked(self) -> bool:
        return self._free == 0

    async def take(self, key: SlotKey) -> asyncpg.Connection | None:
        """Wait for a slot; with it, a connection whose transaction was begun for `key`, or
        None (take one from the pool)."""
        if self._free > 0 and self._next_key() is None:
            self._free -= 1
            return None
        waiter = _Waiter(key, asyncio.get_running_loop().create_future())
        self._queues.setdefault(key, deque()).append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if not self._leave(waiter) and not waiter.future.cancelled():
                self.give()  # served as it was cancelled: pass it on (a handed-over
            raise  # connection is closed by its owner's close())

    def wanted(self, key: SlotKey) -> bool:
        """Does a step wait for a slot to run as `key`?"""
        return any(not w.future.done() for w in self._queues.get(key, ()))

    def hand(self, key: SlotKey, conn: asyncpg.Connection) -> bool:
        """Give the slot held with `conn`, and `conn`, to the first step waiting as `key`
        when it is `key`'s turn; False (nothing done) when none waits or another key's
        turn comes first."""
        if self._next_key() != key:
            return False
        waiter = self._serve(key)
        assert waiter is not None
        waiter.future.set_result(conn)
        return True

    def give(self) -> None:
        """Give a slot back: to the waiter whose turn it is, else to the free ones. (A waiter
        cancelled a moment ago is still queued, its future already cancelled: it is passed
        over.)"""
        key = self._next_key()
        if key is None:
            self._free += 1
            return
        waiter = self._serve(key)
        assert waiter is not None
        waiter.future.set_result(None)

    def _next_key(self) -> SlotKey | None:
        """The key whose turn is next (its queue's cancelled waiters dropped on the way)."""
        for key in list(self._queues):
            queue = self._queues[key]
            while queue and queue[0].future.done():
                queue.popleft()
            if queue:
                return key
            del self._queues[key]
        return None

    def _serve(self, key: SlotKey) -> _Waiter | None:
        """Take `key`'s first waiter and send `key` to the end of the turn order."""
        queue = self._queues.pop(key, None)
        if not queue:
            return None
        waiter = queue.popleft()
        if queue:
            self._queues[key] = queue
        return waiter

    def _leave(self, waiter: _Waiter) -> bool:
        """Take a cancelled waiter out of its queue; False when it was no longer there."""
        queue = self._queues.get(waiter.key)
        if queue is None or waiter not in queue:
            return False
        queue.remove(waiter)
        if not queue:
            del self._queues[waiter.key]
        return True
