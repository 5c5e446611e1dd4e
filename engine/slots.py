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
    """A semaphore whose waiters, served in order, may receive a connection with their slot."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[_Waiter] = deque()

    @property
    def free(self) -> int:
        """Slots nobody holds or waits for."""
        return self._free

    def locked(self) -> bool:
        return self._free == 0

    async def take(self, key: SlotKey) -> asyncpg.Connection | None:
        """Wait for a slot; with it, a connection whose transaction was begun for `key`, or
        None (take one from the pool)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return None
        waiter = _Waiter(key, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif not waiter.future.cancelled():  # served as it was cancelled: pass it on
                self.give()  # (a handed-over connection is closed by its owner's close())
            raise

    def wanted(self, key: SlotKey) -> bool:
        """Does a step wait for a slot to run as `key`?"""
        return any(w.key == key and not w.future.done() for w in self._waiters)

    def hand(self, key: SlotKey, conn: asyncpg.Connection) -> bool:
        """Give the slot held with `conn`, and `conn`, to the first step waiting as `key`;
        False (nothing done) when none waits."""
        for waiter in self._waiters:
            if waiter.key == key and not waiter.future.done():
                self._waiters.remove(waiter)
                waiter.future.set_result(conn)
                return True
        return False

    def give(self) -> None:
        """Give a slot back: to the first waiter, else to the free ones. (A waiter cancelled
        a moment ago is still queued, its future already cancelled: it is passed over.)"""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)
                return
        self._free += 1
