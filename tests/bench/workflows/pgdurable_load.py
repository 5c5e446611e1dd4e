"""pgdurable's clients: psycopg connections through the proxy that start workflows and wait.

With several pgdurable processes on one database, client i connects to process i mod N and
the watcher to the first.

Every client connection is autocommit with server-side prepares off, so each df.start is
one extended-protocol round trip whose Parse pgdurable sees (and wakes its engine on).
Completion is observed by one watcher connection that polls df.status for every workflow
somebody waits on (one query per poll, whatever the number of clients), or, with
--wait await, by each client calling df.await_instance itself.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.bench.workflows.window import Measurement, Window
from tests.bench.workflows.workloads import TERMINAL, Workload

WATCH_SQL = "/* bench:watch */ SELECT i, df.status(i) FROM unnest(%s::text[]) AS i"
AWAIT_SQL = "SELECT df.await_instance(%s, %s)"
MAX_START_ERRORS = 5


@dataclass(slots=True)
class Started:
    """One df.start as the client saw it."""

    instance_id: str
    started_wall: float
    started: float  # perf_counter
    observed: float | None = None  # perf_counter when the client learnt it finished
    status: str | None = None  # as the client learnt it (None: not waited for)


@dataclass
class LoadOutcome:
    """What the clients did in one run."""

    started: list[Started] = field(default_factory=list)
    wall_s: float = 0.0  # closed: first start -> last client done; burst: start phase only
    wait_queries: int = 0  # polls or await calls, each one transaction
    start_errors: list[str] = field(default_factory=list)
    measured: Measurement | None = None


class Watcher:
    """Polls df.status for the workflows clients wait on; resolves their futures."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], interval_s: float) -> None:
        self.conn = conn
        self.interval_s = interval_s
        self.pending: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self.polls = 0
        self._work = asyncio.Event()

    def watch(self, instance_id: str) -> asyncio.Future[tuple[str, float]]:
        future = asyncio.get_running_loop().create_future()
        self.pending[instance_id] = future
        self._work.set()
        return future

    def forget(self, instance_id: str) -> None:
        self.pending.pop(instance_id, None)

    async def run(self) -> None:
        while True:
            if not self.pending:
                self._work.clear()
                await self._work.wait()
            cur = await self.conn.execute(WATCH_SQL, (list(self.pending),))
            rows = await cur.fetchall()
            now = time.perf_counter()
            self.polls += 1
            for instance_id, status in rows:
                if status in TERMINAL:
                    future = self.pending.pop(instance_id, None)
                    if future is not None and not future.done():
                        future.set_result((status, now))
            await asyncio.sleep(self.interval_s)


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=None)


async def _start(conn: psycopg.AsyncConnection[Any], workload: Workload) -> str:
    cur = await conn.execute(workload.start_sql)
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


class _Clients:
    """N client connections and a watcher connection, opened before the clock starts."""

    def __init__(self, dsns: Sequence[str], clients: int, poll_s: float) -> None:
        self.dsns, self.n, self.poll_s = dsns, clients, poll_s
        self.conns: list[psycopg.AsyncConnection[Any]] = []
        self.watcher: Watcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Clients:
        dsns = [self.dsns[0], *(self.dsns[i % len(self.dsns)] for i in range(self.n))]
        self.conns = list(await asyncio.gather(*(_connect(dsn) for dsn in dsns)))
        self.watcher = Watcher(self.conns.pop(0), self.poll_s)
        self._task = asyncio.create_task(self.watcher.run(), name="bench-watcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        conns = [*self.conns, *([self.watcher.conn] if self.watcher else [])]
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def closed_loop(
    dsns: Sequence[str],
    workload: Workload,
    *,
    clients: int,
    duration_s: float,
    wait: str,
    poll_s: float,
    timeout_s: float,
    window: Window | None,
) -> LoadOutcome:
    """Each client: start a workflow, wait until it finished, repeat until the deadline."""
    out = LoadOutcome()
    awaits = 0
    async with _Clients(dsns, clients, poll_s) as pool:
        assert pool.watcher is not None
        watcher = pool.watcher

        async def client(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal awaits
            while time.perf_counter() < deadline and len(out.start_errors) < MAX_START_ERRORS:
                rec = Started("", time.time(), time.perf_counter())
                try:
                    rec.instance_id = await _start(conn, workload)
                except psycopg.Error as exc:
                    out.start_errors.append(f"df.start: {exc}")
                    continue
                out.started.append(rec)
                if wait == "await":
                    awaits += 1
                    rec.status = await _await(conn, rec.instance_id, timeout_s)
                    rec.observed = time.perf_counter()
                    continue
                try:
                    rec.status, rec.observed = await asyncio.wait_for(
                        watcher.watch(rec.instance_id), timeout_s
                    )
                except TimeoutError:
                    watcher.forget(rec.instance_id)
                    rec.status = "timeout"

        if window is not None:
            await asyncio.to_thread(window.open)
        begin = time.perf_counter()
        deadline = begin + duration_s
        await asyncio.gather(*(client(c) for c in pool.conns))
        out.wall_s = time.perf_counter() - begin
        out.wait_queries = watcher.polls + awaits
        if window is not None:
            window.stop_cpu()
            out.measured = await asyncio.to_thread(window.close)
    return out


async def _await(conn: psycopg.AsyncConnection[Any], instance_id: str, timeout_s: float) -> str:
    try:
        cur = await conn.execute(AWAIT_SQL, (instance_id, max(1, round(timeout_s))))
        row = await cur.fetchone()
    except psycopg.Error as exc:
        return f"error: {exc.sqlstate}"
    return str(row[0]) if row else "error: no row"


async def burst(
    dsns: Sequence[str],
    workload: Workload,
    *,
    clients: int,
    count: int,
    poll_s: float,
    timeout_s: float,
    window: Window | None,
    beside: Callable[[LoadOutcome], Awaitable[None]] | None = None,
) -> LoadOutcome:
    """Start `count` workflows as fast as `clients` connections can, then wait for all,
    running `beside` meanwhile (the crash run kills a process there)."""
    out = LoadOutcome()
    tickets = itertools.count()
    async with _Clients(dsns, clients, poll_s) as pool:
        assert pool.watcher is not None
        watcher = pool.watcher

        async def client(conn: psycopg.AsyncConnection[Any]) -> None:
            while next(tickets) < count and len(out.start_errors) < MAX_START_ERRORS:
                rec = Started("", time.time(), time.perf_counter())
                try:
                    rec.instance_id = await _start(conn, workload)
                except psycopg.Error as exc:
                    out.start_errors.append(f"df.start: {exc}")
                    continue
                out.started.append(rec)

        if window is not None:
            await asyncio.to_thread(window.open)
        begin = time.perf_counter()
        aside = asyncio.ensure_future(beside(out)) if beside is not None else None
        await asyncio.gather(*(client(c) for c in pool.conns))
        out.wall_s = time.perf_counter() - begin
        futures = {rec.instance_id: watcher.watch(rec.instance_id) for rec in out.started}
        done, _ = await asyncio.wait(futures.values(), timeout=timeout_s)
        if aside is not None:
            await aside
        for rec in out.started:
            future = futures[rec.instance_id]
            if future in done:
                rec.status, rec.observed = future.result()
            else:
                watcher.forget(rec.instance_id)
                rec.status = "timeout"
        out.wait_queries = watcher.polls
        if window is not None:
            window.stop_cpu()
            out.measured = await asyncio.to_thread(window.close)
    return out
