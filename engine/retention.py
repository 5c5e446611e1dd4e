"""Retention: bounded growth of df.instances (pg_durable 0.2.4's reconciliation pass).

Every `reconcile_interval` seconds (the first pass soon after the engine starts), finished
instances (completed, failed, cancelled) older than `retention_days`, or beyond the newest
`retention_max_instances`, are deleted with their nodes and engine rows, in batches of a
few hundred, each its own short transaction (df._prune_finished), with a pause after each
as long as it took. A batch skips instances
another transaction holds and never touches pending or running ones; it locks only the rows
it deletes, so df.start never waits for it. With several pgdurable processes on one
database, one prunes at a time (a transaction-level advisory lock in each batch).

A pass is best-effort, as pg_durable's: an error is logged and the next interval tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import asyncpg

from engine.running import Background
from engine.settings import EngineSettings
from engine.store import Store

log = logging.getLogger("pgdurable.engine")
BATCH = 100  # instances per transaction
# After each batch the pass waits PAUSE_FACTOR times as long as the batch took (at least
# MIN_PAUSE_SECONDS): it takes at most a fifth of the database's time, and a df.start's
# commit never queues behind a run of batches' WAL (measured: python -m tests.bench.scale).
PAUSE_FACTOR = 4.0
MIN_PAUSE_SECONDS = 0.05
FIRST_PASS_DELAY = 5.0  # seconds after the engine started (sooner with a shorter interval)


class Retention:
    """The retention loop of one engine."""

    def __init__(
        self, settings: EngineSettings, store: Store, background: Background, stop: asyncio.Event
    ) -> None:
        self.older_than = timedelta(days=settings.retention_days)
        self.keep = settings.retention_max_instances
        self.interval = float(settings.reconcile_interval)
        self.store = store
        self.background = background
        self.stop = stop

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    async def run(self) -> None:
        """A pass soon after start, then one every interval, until the engine stops."""
        pause = min(FIRST_PASS_DELAY, self.interval)
        while not await self._stopped_within(pause):
            try:
                await self.prune()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.background.warn(exc, "retention", "event=retention_error error=%r")
            except Exception:  # a bug here must not stop the engine: workflows go on
                log.exception("event=retention_failed")
            pause = self.interval

    async def prune(self) -> None:
        """One pass: batch after batch until none is left; one log line."""
        started = time.monotonic()
        by_age = by_cap = 0
        while not self.stop.is_set():
            began = time.monotonic()
            batch = await self.store.prune_finished(self.older_than, self.keep, BATCH)
            if batch is None:
                log.debug("event=retention_pass_skipped reason=another_process_prunes")
                if by_age + by_cap == 0:
                    return
                break
            by_age += batch.by_age
            by_cap += batch.by_cap
            if batch.total < BATCH:
                break
            await asyncio.sleep(max(MIN_PAUSE_SECONDS, PAUSE_FACTOR * (time.monotonic() - began)))
        log.info(
            "event=retention_pass pruned=%d by_age=%d by_cap=%d seconds=%.3f",
            by_age + by_cap,
            by_age,
            by_cap,
            time.monotonic() - started,
        )

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()
