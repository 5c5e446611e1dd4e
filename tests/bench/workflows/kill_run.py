"""Scale-out's crash run: a burst over N pgdurable processes, the last one SIGKILLed while it
runs steps; how long the instances it had in flight took to finish afterwards, against its
lease. The clients start their workflows on PostgreSQL directly, so no start is lost with
the killed one's connections, and the wake-ups of their starts are shared by every
process, the victim included, by the PIDs of the clients' backends (a start through one
process's relay wakes that process alone)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import psycopg

from tests.bench.workflows.fleet import Fleet
from tests.bench.workflows.pgdurable_load import LoadOutcome, burst
from tests.bench.workflows.pgdurable_runs import BURST_POLL_S, PgdurableSetup, run_async
from tests.bench.workflows.workloads import EVENTS_TABLE, TERMINAL, WORKLOADS

# The killed process's leases and claims (its instances: a task leased, or an advance claimed,
# the first step of a new instance among them), and every instance not finished yet, at the
# moment of the kill.
LEASED_SQL = (
    "SELECT instance_id::text, extract(epoch FROM lease_until - now())::float8 FROM df._tasks "
    "WHERE lease_owner = %(victim)s::uuid UNION ALL "
    "SELECT instance_id::text, extract(epoch FROM claimed_until - now())::float8 "
    "FROM df._advance WHERE claimed_by = %(victim)s::uuid AND claimed_until > now()"
)
UNFINISHED_SQL = (
    "SELECT id::text FROM df.instances WHERE id = ANY(%s) AND status <> ALL(%s::text[])"
)
FINISHED_SQL = (
    "SELECT id::text, status, extract(epoch FROM completed_at)::float8 FROM df.instances "
    "WHERE id = ANY(%s)"
)


@dataclass
class KillResult:
    """One crash run (JSON row and report line)."""

    workload: str
    processes: int
    rtt_ms: float
    lease_seconds: float
    started: int = 0
    completed: int = 0
    kill_after_s: float = 0.0  # from the first start
    leased_at_kill: int = 0  # instances with a task leased by the killed process
    lease_left_max_s: float | None = None  # the longest of those leases still to run
    unfinished_at_kill: int = 0  # all instances not finished yet, any process
    leased_done_p50_s: float | None = None  # kill → completed, leased instances
    leased_done_max_s: float | None = None
    unfinished_done_max_s: float | None = None  # kill → the last completion
    recoveries: list[int | None] = field(default_factory=list)  # per surviving process
    rows_expected: int | None = None
    rows_found: int | None = None
    errors: list[str] = field(default_factory=list)


def _since(done: dict[str, float | None], ids: list[str], at: float) -> list[float]:
    return sorted(t - at for i in ids if (t := done.get(i)) is not None)


def measure_kill(
    setup: PgdurableSetup,
    fleet: Fleet,
    name: str,
    *,
    kill_after_s: float,
    lease_seconds: float,
    rtt_ms: float,
) -> KillResult:
    """A burst of `name` over the fleet; SIGKILL its last process kill_after_s after the
    first start; wait for every instance; the times after the kill and the exactly-once
    check."""
    wl = WORKLOADS[name]
    victim = len(fleet.processes) - 1
    result = KillResult(name, len(fleet.processes), rtt_ms, lease_seconds)
    result.kill_after_s = kill_after_s
    with psycopg.connect(setup.meter_dsn, autocommit=True) as meter:
        rows_before = _rows(meter)
        at_kill = _AtKill()

        async def kill(load: LoadOutcome) -> None:
            await asyncio.sleep(kill_after_s)
            ids = [rec.instance_id for rec in load.started]
            await asyncio.to_thread(at_kill.kill, meter, fleet, victim, ids)

        outcome = run_async(
            lambda: burst(
                (setup.direct_dsn,),
                wl,
                clients=setup.clients[0],
                count=setup.burst,
                poll_s=BURST_POLL_S,
                timeout_s=setup.timeout_s + 2 * lease_seconds,
                window=None,
                beside=kill,
            )
        )
        ids = [rec.instance_id for rec in outcome.started]
        rows = meter.execute(FINISHED_SQL, (ids,)).fetchall()
        done = {i: t for i, status, t in rows if status == "completed"}
        result.started, result.completed = len(ids), len(done)
        result.errors = [f"df.start: {e}" for e in outcome.start_errors[:3]]
        result.errors += [f"{len(ids) - len(done)} not completed"] if len(done) < len(ids) else []
        leased = _since(done, at_kill.leased, at_kill.at)
        unfinished = _since(done, at_kill.unfinished, at_kill.at)
        result.leased_at_kill = len(at_kill.leased)
        result.unfinished_at_kill = len(at_kill.unfinished)
        result.lease_left_max_s = at_kill.lease_left_max_s
        if leased:
            result.leased_done_p50_s = round(leased[len(leased) // 2], 3)
            result.leased_done_max_s = round(leased[-1], 3)
        if unfinished:
            result.unfinished_done_max_s = round(unfinished[-1], 3)
        result.recoveries = fleet.lease_recoveries()
        if wl.insert:
            result.rows_expected = len(done) * wl.rows_per_workflow
            result.rows_found = _rows(meter) - rows_before
    return result


@dataclass
class _AtKill:
    """What the killed process held when it died: its leases stay in df._tasks until they
    expire (or it comes back); instances it was only advancing any process may take."""

    at: float = 0.0  # wall clock of the kill
    leased: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    lease_left_max_s: float | None = None

    def kill(
        self,
        meter: psycopg.Connection[tuple[object, ...]],
        fleet: Fleet,
        victim: int,
        started: list[str],
    ) -> None:
        self.at = time.time()
        fleet.kill(victim)
        rows = meter.execute(LEASED_SQL, {"victim": fleet.epochs[victim]}).fetchall()
        self.leased = sorted({str(r[0]) for r in rows})
        left = [float(r[1]) for r in rows if r[1] is not None]  # type: ignore[arg-type]
        self.lease_left_max_s = round(max(left), 3) if left else None
        rows = meter.execute(UNFINISHED_SQL, (started, list(TERMINAL))).fetchall()
        self.unfinished = [str(r[0]) for r in rows]


def _rows(meter: psycopg.Connection[tuple[object, ...]]) -> int:
    row = meter.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]
