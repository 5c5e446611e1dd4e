"""The gauges /metrics reads from the catalog: unfinished instances by status, the backlog
of due work nobody took, and the size of df.instances.

One statement (queries.sql: catalog_gauges) on the engine's admin pool, at most once a
second however often /metrics is scraped, bounded by a timeout. Each count walks one index
range and stops at COUNT_CAP rows, so a scrape costs the same with a million finished
instances as with none. While PostgreSQL does not answer, the scrape still answers: these
gauges are absent (never stale numbers shown as current) and catalog_up says 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.queries import q

log = logging.getLogger("pgdurable.metrics")
CACHE_SECONDS = 1.0  # scrapes within this of the last read share it
READ_TIMEOUT = 1.0  # seconds a scrape waits for PostgreSQL
COUNT_CAP = 100_000  # a count stops here: the gauge then reads "at least this many"
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    """One read of catalog_gauges."""

    pending: int
    running: int
    tasks_unclaimed: int
    tasks_lease_expired: int
    tasks_oldest_seconds: float
    advances_due: int
    advances_oldest_seconds: float
    instances_estimate: float | None  # None: df.instances was never analysed

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CatalogSnapshot:
        estimate = row["instances_estimate"]
        return cls(
            row["pending"],
            row["running"],
            row["tasks_unclaimed"],
            row["tasks_lease_expired"],
            row["tasks_oldest_seconds"] or 0.0,
            row["advances_due"],
            row["advances_oldest_seconds"] or 0.0,
            None if estimate is None or estimate < 0 else float(estimate),
        )


class CatalogGauges(Collector):
    """Reads the catalog when /metrics asks (refresh), serves the last read (collect)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.snapshot: CatalogSnapshot | None = None
        self.read_seconds = 0.0
        self._read_at = -CACHE_SECONDS
        self._reading: asyncio.Task[None] | None = None
        self._reading_since = 0.0

    async def refresh(self, pool: asyncpg.Pool | None) -> None:
        """Read the catalog unless it was read within CACHE_SECONDS. Concurrent scrapes
        share one read, and none waits past READ_TIMEOUT from the read's start: a read
        still going then (PostgreSQL hangs; cleaning up after a cancelled query can take
        as long) goes on alone, and the gauges are absent until one answers."""
        now = time.monotonic()
        if now - self._read_at < CACHE_SECONDS:
            return
        reading = self._reading
        if reading is None:
            reading = asyncio.create_task(self._read(pool), name="pgdurable-metrics-read")
            self._reading, self._reading_since = reading, now
        left = READ_TIMEOUT - (now - self._reading_since)
        if left > 0:
            await asyncio.wait({reading}, timeout=left)
        if not reading.done():
            self.snapshot = None

    async def _read(self, pool: asyncpg.Pool | None) -> None:
        started = time.monotonic()
        try:
            self.snapshot = None if pool is None else await self._fetch(pool)
        except _DB_ERRORS as exc:  # PostgreSQL away: catalog_up says so
            log.debug("event=catalog_gauges_unread error=%r", exc)
            self.snapshot = None
        except Exception:  # a bug: said, and /metrics goes on answering
            log.exception("event=catalog_gauges_failed")
            self.snapshot = None
        finally:
            self._read_at = time.monotonic()
            self.read_seconds = self._read_at - started
            self._reading = None

    @staticmethod
    async def _fetch(pool: asyncpg.Pool) -> CatalogSnapshot:
        async with pool.acquire(timeout=READ_TIMEOUT) as conn:
            row = await conn.fetchrow(q("catalog_gauges"), COUNT_CAP, timeout=READ_TIMEOUT)
        assert row is not None  # one row, always
        return CatalogSnapshot.from_row(row)

    async def close(self) -> None:
        """Cancel a read in flight (the engine stops), waiting for it a moment at most."""
        reading = self._reading
        if reading is not None:
            reading.cancel()
            await asyncio.wait({reading}, timeout=READ_TIMEOUT)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p, snapshot = self.prefix, self.snapshot
        yield GaugeMetricFamily(
            f"{p}catalog_up",
            "1 when the last read of the catalog's gauges answered (within 1 s), else 0: "
            "the instances, tasks_due and advances_due gauges are then absent.",
            value=0 if snapshot is None else 1,
        )
        yield GaugeMetricFamily(
            f"{p}catalog_read_seconds",
            "How long the last read of the catalog's gauges took (read at most once a second).",
            value=self.read_seconds,
        )
        if snapshot is not None:
            yield from self._snapshot_families(snapshot)

    def _snapshot_families(self, s: CatalogSnapshot) -> Iterator[GaugeMetricFamily]:
        p = self.prefix
        capped = f"(counted up to {COUNT_CAP})"
        instances = GaugeMetricFamily(
            f"{p}instances", f"Unfinished instances by status {capped}.", labels=["status"]
        )
        instances.add_metric(["pending"], s.pending)
        instances.add_metric(["running"], s.running)
        yield instances
        tasks = GaugeMetricFamily(
            f"{p}tasks_due",
            "Due tasks no engine runs: unclaimed (timers and steps waiting for a free slot "
            f"or an engine) or lease_expired (waiting to be recovered) {capped}.",
            labels=["state"],
        )
        tasks.add_metric(["unclaimed"], s.tasks_unclaimed)
        tasks.add_metric(["lease_expired"], s.tasks_lease_expired)
        yield tasks
        yield GaugeMetricFamily(
            f"{p}tasks_due_oldest_age_seconds",
            "How long the oldest of the due tasks no engine runs has waited (0: none).",
            value=s.tasks_oldest_seconds,
        )
        yield GaugeMetricFamily(
            f"{p}advances_due",
            f"Instance advances due and not yet taken by an engine {capped}.",
            value=s.advances_due,
        )
        yield GaugeMetricFamily(
            f"{p}advances_due_oldest_age_seconds",
            "How long the oldest due advance has waited (0: none).",
            value=s.advances_oldest_seconds,
        )
        if s.instances_estimate is not None:
            yield GaugeMetricFamily(
                f"{p}instances_stored_estimate",
                "Rows of df.instances, finished ones included: PostgreSQL's estimate "
                "(pg_class.reltuples, kept by autovacuum and ANALYZE), not a count.",
                value=s.instances_estimate,
            )
