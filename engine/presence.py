"""The engine's presence in its database: one connection of its own that LISTENs for
wake-ups, holds this engine's epoch lock and writes its heartbeat (df._worker_epoch).

Several pgdurable processes share the wake-ups, so that a df.start wakes one engine, not
all (df._wake_engines): a session pgdurable relays raises WAKE_MARKER, a NOTICE its relay
takes out of the stream and turns into a wake-up of its own engine once the transaction
has ended; any other session notifies df_wake, and the engine whose share the sending
backend's PID falls in, among the engines alive at the last heartbeat, acts (WakeShare).

The heartbeat has its own connection, as pg_durable keeps its epoch polling off the pool
that runs steps, so a busy pool never delays it: df.start reads it to decide whether an
engine is ready (engine/sql/catalog/presence.sql). While the connection lives,
PostgreSQL holds the epoch's advisory lock for it; when the process dies, the lock goes
with its session and the next heartbeat of any pgdurable removes its row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg

from engine.queries import q

WAKE_CHANNEL = "df_wake"
WAKE_MARKER = "pgdurable:wake"  # df._wake_engines' NOTICE on a relayed session
# pg_durable refreshes last_seen_at about every 5 s; a shorter lease beats more often, so
# that a heartbeat is never older than a third of the lease while the engine runs.
HEARTBEAT_SECONDS = 5.0


def heartbeat_interval(lease_seconds: float) -> float:
    """Seconds between two heartbeats for this lease."""
    return min(HEARTBEAT_SECONDS, lease_seconds / 3)


class WakeShare:
    """Which df_wake notifications this engine acts on: its share, by the sending
    backend's PID among the engines alive (sessions pgdurable relays wake their own
    process's engine through the relay, WAKE_MARKER)."""

    def __init__(self, key: uuid.UUID) -> None:
        self.key = key
        self.index, self.engines = 0, 1  # its place among the engines alive

    def ours(self, pid: int) -> bool:
        """Is a notification from backend `pid` in our share?"""
        return pid % self.engines == self.index

    def update(self, alive: list[uuid.UUID]) -> None:
        """The engines alive now, in their order (the live_engines query)."""
        if self.key in alive:
            self.index, self.engines = alive.index(self.key), len(alive)
        else:  # not registered again yet: take every share meanwhile
            self.index, self.engines = 0, 1


class Presence:
    """The presence connection of the engine whose epoch id is `key`."""

    def __init__(
        self,
        dsn: str,
        key: uuid.UUID,
        lease_seconds: float,
        on_wake: Callable[[], None],
    ) -> None:
        self.dsn = dsn
        self.key = key
        self.share = WakeShare(key)
        self.lease_seconds = lease_seconds  # written with each heartbeat (df.start reads it)
        self._on_wake = on_wake
        self._conn: asyncpg.Connection | None = None
        self._connecting = asyncio.Lock()

    @property
    def listening(self) -> bool:
        """Is the connection up (wake-ups arrive, the epoch lock is held)?"""
        return self._conn is not None and not self._conn.is_closed()

    async def ensure(self) -> None:
        """Connect unless connected: LISTEN, take the epoch lock, beat once."""
        async with self._connecting:
            if self.listening:
                return
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.add_listener(WAKE_CHANNEL, self._notified)
                await conn.execute(q("hold_epoch"), self.key)
                await self._beat(conn)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn

    async def beat(self) -> None:
        """Refresh this engine's row (reconnecting first if the connection was lost)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            await self.ensure()  # its own heartbeat included
            return
        await self._beat(conn)

    async def _beat(self, conn: asyncpg.Connection) -> None:
        await conn.execute(q("heartbeat"), self.key, self.lease_seconds)
        self.share.update([r[0] for r in await conn.fetch(q("live_engines"))])

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        """A df_wake notification: look for work now if it is ours (WakeShare). What to
        advance, and as whom, is read from the catalog (any role may NOTIFY df_wake)."""
        if self.share.ours(pid):
            self._on_wake()

    def close(self) -> None:
        """Drop the connection: the epoch lock goes with it, the row stays until a living
        pgdurable (or the next one to start) removes it."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
