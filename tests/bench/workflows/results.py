"""One measured run (a row of the JSON output) and how its figures are derived."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.bench.workflows.window import Measurement


@dataclass(frozen=True, slots=True)
class Sample:
    """One workflow as the client saw it and as the server recorded it."""

    status: str  # completed | failed | cancelled | timeout | ...
    started_wall: float  # time.time() just before the start call
    client_s: float | None  # start call -> completion observed by the client
    server_s: float | None  # created -> completed, from the system's own timestamps
    completed_wall: float | None  # server-side completion time (epoch seconds)


@dataclass
class RunResult:
    """A closed-loop or burst run of one workload on one system."""

    system: str  # pgdurable | dbos
    workload: str
    mode: str  # closed | burst | single (a closed loop with one client)
    clients: int
    steps_per_workflow: int
    rtt_ms: float = 0.0  # the latency link's round trip (0: no link, loopback)
    processes: int = 1  # pgdurable processes on the database, clients spread over them
    workflows: int = 0  # completed
    failed: int = 0  # failed, cancelled or not finished in time
    wall_s: float | None = None
    wf_per_s: float | None = None
    steps_per_s: float | None = None
    start_rate: float | None = None  # burst: starts accepted per second
    client_p50_ms: float | None = None
    client_p99_ms: float | None = None
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    commits: int | None = None  # all commits in the measured databases
    wait_queries: int = 0  # the client's status polls / await calls (one commit each)
    commits_per_step: float | None = None  # (commits - wait_queries) / steps
    statements_per_step: float | None = None  # pg_stat_statements calls, wait queries excluded
    segments_in: int | None = None  # client→PostgreSQL TCP data segments (window.py)
    segments_in_pg: int | None = None  # over a link: the same counted on PostgreSQL's side
    round_trips_per_step: float | None = None  # (segments_in - wait_queries) / steps
    start_statements: int | None = None
    other_statements: int | None = None
    internal_statements: int | None = None  # deferred FK checks at COMMIT (not round trips)
    commits_by_db: dict[str, int] = field(default_factory=dict)
    rows_expected: int | None = None
    rows_found: int | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_wf: dict[str, float] = field(default_factory=dict)
    steps_by_process: list[int | None] = field(default_factory=list)  # SQL steps completed
    in_flight: dict[str, float] = field(default_factory=dict)  # mean open transactions
    engine_paths: dict[str, int] = field(default_factory=dict)  # pgdurable's /metrics counters
    top_statements: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        where = f" rtt {self.rtt_ms:g} ms" if self.rtt_ms else ""
        if self.processes > 1:
            where += f" × {self.processes} processes"
        return f"{self.system} {self.workload} {self.mode} ({self.clients} clients{where})"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def fill(
    result: RunResult,
    samples: Sequence[Sample],
    wall_s: float,
    measured: Measurement | None,
) -> RunResult:
    """Derive throughput, latency percentiles, per-step costs and CPU per workflow."""
    done = [s for s in samples if s.status == "completed"]
    result.workflows = len(done)
    result.failed = len(samples) - len(done)
    steps = len(done) * result.steps_per_workflow
    result.wall_s = round(wall_s, 3)
    if wall_s > 0:
        result.wf_per_s = round(len(done) / wall_s, 1)
        result.steps_per_s = round(steps / wall_s, 1)
    client = [s.client_s for s in done if s.client_s is not None]
    server = [s.server_s for s in done if s.server_s is not None]
    result.client_p50_ms, result.client_p99_ms = (
        _ms(percentile(client, 50)),
        _ms(percentile(client, 99)),
    )
    result.server_p50_ms, result.server_p99_ms = (
        _ms(percentile(server, 50)),
        _ms(percentile(server, 99)),
    )
    if measured is not None:
        _costs(result, measured, steps, len(done))
    return result


def _costs(result: RunResult, measured: Measurement, steps: int, workflows: int) -> None:
    """Commits, statements and round trips per SQL step; CPU per workflow."""
    stats = measured.stats
    result.segments_in = measured.segments_in
    result.segments_in_pg = measured.segments_in_pg
    result.in_flight = measured.in_flight or {}
    result.commits = stats.total_commits
    result.commits_by_db = dict(stats.commits)
    start, other = stats.calls("start"), stats.calls("other")
    if start is not None and other is not None:
        result.start_statements, result.other_statements = start, other
        result.internal_statements = stats.calls("internal")
    result.top_statements = [
        {"db": s.database, "calls": s.calls, "kind": s.kind, "query": s.query}
        for s in stats.top(25)
    ]
    result.cpu_s = measured.cpu_s
    if workflows:
        result.cpu_ms_per_wf = {
            k: round(v * 1000 / workflows, 2) for k, v in measured.cpu_s.items()
        }
    if not steps:
        return
    # every wait query (status poll, await call) is one transaction and one round trip
    result.commits_per_step = round((result.commits - result.wait_queries) / steps, 2)
    if start is not None and other is not None:
        result.statements_per_step = round((start + other) / steps, 2)
    if measured.segments_in is not None:
        result.round_trips_per_step = round((measured.segments_in - result.wait_queries) / steps, 2)
