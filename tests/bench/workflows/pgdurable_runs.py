"""pgdurable side of the workflow benchmark: measured runs around the async client load."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from tests.bench.workflows.fleet import Fleet
from tests.bench.workflows.pgdurable_load import LoadOutcome, burst, closed_loop
from tests.bench.workflows.results import RunResult, Sample, fill
from tests.bench.workflows.window import Window
from tests.bench.workflows.workloads import EVENTS_TABLE, HELLO_WORLD, TERMINAL, WORKLOADS

T = TypeVar("T")
SERVER_SQL = (
    "SELECT id, status, extract(epoch FROM created_at)::float8, "
    "extract(epoch FROM completed_at)::float8 FROM df.instances WHERE id = ANY(%s)"
)
STUCK_SQL = (
    "SELECT i.id, i.status, "
    "(SELECT string_agg(n.node_type || ':' || n.status, ',' ORDER BY n.id) FROM df.nodes n "
    " WHERE n.instance_id = i.id), "
    "(SELECT count(*) FROM df._tasks t WHERE t.instance_id = i.id), "
    "(SELECT count(*) FROM df._advance a WHERE a.instance_id = i.id) "
    "FROM df.instances i WHERE i.id = ANY(%s) LIMIT 5"
)
BURST_POLL_S = 0.05


@dataclass(frozen=True)
class PgdurableSetup:
    """Where the clients and the meter connect, and what to measure."""

    client_dsns: tuple[str, ...]  # through the proxies, as the bench role
    meter_dsn: str  # directly to PostgreSQL, superuser, bench database
    clients: tuple[int, ...]  # closed loops at each of these; bursts from the first
    duration_s: float
    burst: int
    wait: str  # poll | await
    poll_s: float
    timeout_s: float
    warmup_s: float
    rtt_ms: float = 0.0  # the latency link's, for the results (0: none)
    direct_dsn: str = ""  # directly to PostgreSQL, as the bench role (the crash run's clients)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] pgdurable: {msg}", file=sys.stderr, flush=True)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop

        return uvloop.run(factory())
    except ImportError:
        return asyncio.run(factory())


class Meter:
    """Superuser connection to the bench database: server-side times and row counts."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def rows(self) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
        return int(row[0]) if row else 0

    def samples(self, outcome: LoadOutcome, mode: str) -> tuple[list[Sample], list[str]]:
        """Client records joined with df.instances; problems (stuck instances) described."""
        ids = [s.instance_id for s in outcome.started]
        rows = self.conn.execute(SERVER_SQL, (ids,)).fetchall()
        server = {iid: (status, created, done) for iid, status, created, done in rows}
        samples, stuck = [], []
        for rec in outcome.started:
            status, created, done = server.get(rec.instance_id, ("missing", None, None))
            if status not in TERMINAL:
                stuck.append(rec.instance_id)
            client_s = None
            if mode != "burst" and rec.observed is not None:
                client_s = rec.observed - rec.started
            samples.append(
                Sample(
                    status=status if status in TERMINAL else f"stuck:{status}",
                    started_wall=rec.started_wall,
                    client_s=client_s,
                    server_s=done - created if done is not None and created is not None else None,
                    completed_wall=done,
                )
            )
        problems = [f"df.start error: {e}" for e in outcome.start_errors[:3]]
        if stuck:
            problems.append(f"{len(stuck)} instances not finished after the wait")
            for row in self.conn.execute(STUCK_SQL, (stuck,)):
                problems.append(
                    f"stuck {row[0]} status={row[1]} nodes={row[2]} tasks={row[3]} "
                    f"advance_requests={row[4]}"
                )
        failed = [s for s in samples if s.status in ("failed", "cancelled")]
        if failed:
            problems.append(f"{len(failed)} instances failed or cancelled")
        return samples, problems

    def catalog_health(self) -> list[str]:
        """Anything left behind after all runs: non-terminal instances, tasks, advances."""
        problems = []
        for status, n in self.conn.execute(
            "SELECT status, count(*) FROM df.instances "
            "WHERE status NOT IN ('completed') GROUP BY 1 ORDER BY 1"
        ):
            problems.append(f"{n} instances with status {status}")
        for table in ("df._tasks", "df._advance"):
            row = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            if row and row[0]:
                problems.append(f"{row[0]} rows left in {table}")
        return problems


def _load(
    setup: PgdurableSetup, name: str, mode: str, clients: int, window: Window | None
) -> LoadOutcome:
    wl = WORKLOADS[name]
    if mode in ("closed", "single"):
        return run_async(
            lambda: closed_loop(
                setup.client_dsns,
                wl,
                clients=clients,
                duration_s=setup.duration_s,
                wait=setup.wait,
                poll_s=setup.poll_s,
                timeout_s=setup.timeout_s,
                window=window,
            )
        )
    return run_async(
        lambda: burst(
            setup.client_dsns,
            wl,
            clients=clients,
            count=setup.burst,
            poll_s=BURST_POLL_S,
            timeout_s=max(setup.timeout_s, setup.burst / 20) * (1 + setup.rtt_ms / 10),
            window=window,
        )
    )


def measure(
    setup: PgdurableSetup,
    run: tuple[str, str, int],
    meter: Meter,
    window: Window,
    fleet: Fleet,
) -> RunResult:
    """One measured run of (workload, mode, clients): client load inside the window, then
    the server-side join and each process's completed steps."""
    name, mode, clients = run
    wl = WORKLOADS[name]
    result = RunResult("pgdurable", name, mode, clients, wl.steps)
    result.rtt_ms, result.processes = setup.rtt_ms, len(setup.client_dsns)
    rows_before = meter.rows()
    steps_before, paths_before = fleet.steps_completed(), fleet.paths()
    outcome = _load(setup, name, mode, clients, window)
    result.steps_by_process = [
        None if a is None or b is None else a - b
        for a, b in zip(fleet.steps_completed(), steps_before, strict=True)
    ]
    result.engine_paths = {k: v - paths_before[k] for k, v in fleet.paths().items()}
    samples, result.errors = meter.samples(outcome, mode)
    wall = outcome.wall_s
    if mode == "burst":
        result.start_rate = round(len(outcome.started) / wall, 1) if wall > 0 else None
        first = min((s.started_wall for s in samples), default=0.0)
        last = max((s.completed_wall or 0.0 for s in samples), default=0.0)
        wall = last - first
    result.wait_queries = outcome.wait_queries
    fill(result, samples, wall, outcome.measured)
    if wl.insert:
        result.rows_expected = result.workflows * wl.rows_per_workflow
        result.rows_found = meter.rows() - rows_before
    return result


def run_all(
    setup: PgdurableSetup,
    runs: Sequence[tuple[str, str, int]],
    window: Window,
    fleet: Fleet,
) -> tuple[list[RunResult], list[str]]:
    """Warm up, then every (workload, mode, clients); returns the runs and catalog problems."""
    meter = Meter(setup.meter_dsn)
    try:
        if setup.warmup_s > 0:
            _log(f"warm-up {setup.warmup_s} s")
            warm = dataclasses.replace(setup, duration_s=setup.warmup_s)
            _load(warm, HELLO_WORLD, "closed", setup.clients[0], None)
        results = []
        for run in runs:
            result = measure(setup, run, meter, window, fleet)
            results.append(result)
            p50 = result.server_p50_ms if run[1] == "burst" else result.client_p50_ms
            _log(
                f"{result.label}: {result.wf_per_s} wf/s, {result.steps_per_s} steps/s, "
                f"p50 {p50} ms, failed {result.failed}"
                + (f" ({result.errors[0]})" if result.errors else "")
            )
        return results, meter.catalog_health()
    finally:
        meter.close()
