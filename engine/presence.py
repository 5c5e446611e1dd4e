"""The engine's presence in its database: one connection of its own that LISTENs for
wake-ups, holds this engine's epoch lock and writes its heartbeat (df._worker_epoch).

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
# pg_durable refreshes last_seen_at about every 5 s; a shorter lease beats more often, so
# that a heartbeat is never older than a third of the lease while the engine runs.
HEARTBEAT_SECONDS = 5.0


def heartbeat_interval(lease_seconds: float) -> float:
    """Seconds between two heartbeats for this lease."""
    return min(HEARTBEAT_SECONDS, lease_seconds / 3)


class Presence:
    """The presence connection of the engine whose epoch id is `key`."""

    def __init__(
        self, dsn: str, key: uuid.UUID, lease_seconds: float, on_wake: Callable[[], None]
    ) -> None:
        self.dsn = dsn
        self.key = key
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
                await conn.execute(q("heartbeat"), self.key, self.lease_seconds)
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
        await conn.execute(q("heartbeat"), self.key, self.lease_seconds)

    def _notified(self, *args: object) -> None:
        """A df_wake notification: look for work now. Its payload is ignored (any role may
        NOTIFY df_wake): what to advance, and as whom, is read from the catalog."""
        self._on_wake()

    def close(self) -> None:
        """Drop the connection: the epoch lock goes with it, the row stays until a living
        pgdurable (or the next one to start) removes it."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
