"""One scheduler pass timed as the engine makes it: Store.poll (df._poll through the named
statement `poll`, on one asyncpg connection that keeps its prepared statement and its
plpgsql plans, as a pooled engine connection does), inside a transaction that is rolled
back, so every repetition finds the same queue.

Every size's database gets its turn in each round (rounds of `burst` calls per database
and claim size), so drift on a shared machine falls on all sizes alike.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg

from engine.records import AdvanceDue, Claimed, NewInstance
from engine.store import Store
from tests.bench.claims.backlog import Backlog

LEASE_SECONDS = 30.0  # the engine's default --lease-seconds
EPOCH = uuid.UUID("00000000-0000-4000-8000-0000000be4c4")  # the polling engine's epoch


@dataclass(frozen=True, order=True)
class Queue:
    """A database: its backlog, and how many due tasks or new instances it holds."""

    backlog: Backlog
    due: int

    @property
    def database(self) -> str:
        return "empty" if self.due == 0 else f"{self.backlog}_{self.due}"


EMPTY = Queue(Backlog.TASKS, 0)


@dataclass(frozen=True, order=True)
class Cell:
    """One figure: a queue, and the polling engine's free step slots."""

    queue: Queue
    claims: int


@dataclass(frozen=True)
class Pass:
    """One timed pass: milliseconds, tasks claimed, instances handed out to advance."""

    ms: float
    claimed: int
    handed: int


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)
    claimed: set[int] = field(default_factory=set)
    handed: set[int] = field(default_factory=set)

    def add(self, one: Pass) -> None:
        self.ms.append(one.ms)
        self.claimed.add(one.claimed)
        self.handed.add(one.handed)


@dataclass(frozen=True)
class Timing:
    """Median and p99 milliseconds of `reps` passes; the counts they returned."""

    median_ms: float
    p99_ms: float
    reps: int
    claimed: list[int]
    handed: list[int]


def timing(samples: Samples) -> Timing:
    ordered = sorted(samples.ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Timing(
        statistics.median(ordered),
        p99,
        len(ordered),
        sorted(samples.claimed),
        sorted(samples.handed),
    )


def _store(conn: asyncpg.Connection, database: str) -> Store:
    """The engine's Store, its 'pool' this one connection (Store only calls fetch on it)."""
    return Store(lambda: cast(asyncpg.Pool, conn), str(EPOCH), LEASE_SECONDS, database)


async def poll_once(store: Store, conn: asyncpg.Connection, claims: int) -> Pass:
    """One pass with `claims` free slots (documents as many: no advance queued), rolled
    back."""
    tx = conn.transaction()
    await tx.start()
    try:
        t0 = time.perf_counter()
        rows = await store.poll(claims, [], claims)
        elapsed = (time.perf_counter() - t0) * 1000
    finally:
        await tx.rollback()
    claimed = sum(isinstance(r, Claimed) for r in rows)
    handed = sum(isinstance(r, NewInstance | AdvanceDue) for r in rows)
    return Pass(elapsed, claimed, handed)


async def _run(
    dsns: dict[Queue, str], claim_sizes: Sequence[int], reps: int, burst: int, warmup: int
) -> dict[Cell, Samples]:
    conns = {queue: await asyncpg.connect(dsn) for queue, dsn in dsns.items()}
    try:
        stores = {queue: _store(conn, queue.database) for queue, conn in conns.items()}
        cells = [Cell(queue, claims) for queue in dsns for claims in claim_sizes]
        for cell in cells:
            for _ in range(warmup):
                await poll_once(stores[cell.queue], conns[cell.queue], cell.claims)
        out = {cell: Samples() for cell in cells}
        for _ in range(0, reps, burst):
            for cell in cells:
                store, conn = stores[cell.queue], conns[cell.queue]
                for _ in range(burst):
                    out[cell].add(await poll_once(store, conn, cell.claims))
        return out
    finally:
        for conn in conns.values():
            await conn.close()


def measure(
    dsns: dict[Queue, str], claim_sizes: Sequence[int], reps: int, burst: int, warmup: int
) -> dict[Cell, Timing]:
    """Interleaved rounds over every (database, claim size); a Timing per cell."""
    samples = asyncio.run(_run(dsns, claim_sizes, reps, burst, warmup))
    return {cell: timing(s) for cell, s in samples.items()}


# -- EXPLAIN (ANALYZE, BUFFERS) of the statements df._poll runs ---------------------------
_AUTO_EXPLAIN = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_buffers = on",
    "SET auto_explain.log_timing = on",
    "SET auto_explain.log_level = notice",
)


async def _explain(dsn: str, database: str, claims: int, warmup: int) -> list[str]:
    conn = await asyncpg.connect(dsn)
    plans: list[str] = []

    def notice(_: Any, message: Any) -> None:
        plans.append(str(message.message))

    try:
        store = _store(conn, database)
        for _ in range(warmup):  # the plans a long-lived engine connection has settled on
            await poll_once(store, conn, claims)
        for statement in _AUTO_EXPLAIN:
            await conn.execute(statement)
        await conn.execute("SET auto_explain.log_min_duration = 0")
        conn.add_log_listener(notice)
        await poll_once(store, conn, claims)
        await conn.execute("SET auto_explain.log_min_duration = -1")
        conn.remove_log_listener(notice)
    finally:
        await conn.close()
    return _distinct(plans)


def statement_of(plan: str) -> str:
    """The query text auto_explain logged with `plan` (the lines before its first node)."""
    lines = plan.split("Query Text:", 1)[-1].splitlines()
    return "\n".join(line for line in _until_cost(lines)).strip()


def _until_cost(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if "(cost=" in line:
            break
        out.append(line)
    return out


def _distinct(plans: list[str]) -> list[str]:
    """One plan per statement (a function called per claimed task logs one per call)."""
    seen: set[str] = set()
    out = []
    for plan in plans:
        statement = statement_of(plan)
        if statement not in seen:
            seen.add(statement)
            out.append(plan)
    return out


def explain(dsn: str, database: str, claims: int, warmup: int) -> list[str]:
    """auto_explain's plans (ANALYZE, BUFFERS) of one poll's statements, nested ones
    included, after `warmup` polls on the same connection."""
    return asyncio.run(_explain(dsn, database, claims, warmup))
