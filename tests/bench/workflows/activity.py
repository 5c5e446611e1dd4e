"""What is in flight during a run: PostgreSQL's open transactions, sampled from
pg_stat_activity every SAMPLE_S on a connection of the sampler's own, by who holds them.

* step: a workflow step's transaction (pgdurable: a connection of the non-superuser role
  that owns the workflows; DBOS: one on its app database);
* engine: the engine's own bookkeeping (pgdurable: its superuser connections; DBOS: its
  system database);
* client: a benchmark client's df.start or status poll relayed by pgdurable.

The mean number of each over the run says how much the engine keeps in flight: a link's
latency is hidden only when enough steps and advances are open at once. `lock` counts
those of them waiting for a heavyweight lock (a row, a relation, a transaction id): with
several pgdurable processes on one database, contention shows there.
"""

from __future__ import annotations

import threading
from collections import Counter

import psycopg

from tests.bench.workflows.servers import BENCH_DB, BENCH_ROLE, DBOS_APP_DB
from tests.bench.workflows.stats import START_MARKER, WAIT_MARKERS

SAMPLE_S = 0.1
ACTIVITY_SQL = (
    "SELECT datname, usename, query, wait_event_type = 'Lock' FROM pg_stat_activity "
    "WHERE datname = ANY(%s) AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
)
CLIENT_MARKERS = (*WAIT_MARKERS, START_MARKER)


def holder(database: str, role: str, query: str) -> str:
    """step, engine or client (see the module docstring)."""
    if any(marker in query for marker in CLIENT_MARKERS):
        return "client"
    if database == DBOS_APP_DB or (database == BENCH_DB and role == BENCH_ROLE):
        return "step"
    return "engine"


class ActivitySampler:
    """start() when the load begins, stop() when it ends: mean open transactions by holder."""

    def __init__(self, dsn: str, databases: list[str]) -> None:
        self.dsn, self.databases = dsn, databases
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts: Counter[str] = Counter()
        self._samples = 0

    def start(self) -> None:
        self._stop.clear()
        self._counts, self._samples = Counter(), 0
        self._thread = threading.Thread(target=self._run, name="bench-activity", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(ACTIVITY_SQL, (self.databases,)).fetchall()
                self._counts.update(holder(db, role, query or "") for db, role, query, _ in rows)
                self._counts["lock"] += sum(1 for *_, waits in rows if waits)
                self._samples += 1
                self._stop.wait(SAMPLE_S)

    def stop(self) -> dict[str, float]:
        """Mean open transactions per holder since start(), and of them waiting for a lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        n = max(self._samples, 1)
        kinds = ("step", "engine", "client", "lock")
        return {kind: round(self._counts[kind] / n, 2) for kind in kinds}
