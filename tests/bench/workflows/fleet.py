"""pgdurable processes on one database: started one after another (so each one's epoch, the
lease owner it writes into df._tasks, is known), their /metrics read, one SIGKILLed."""

from __future__ import annotations

import re
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.bench.harness import log
from tests.bench.passthrough.servers import BenchError
from tests.bench.workflows.servers import BENCH_DB, BENCH_ROLE, log_problems, start_pgdurable
from tests.support.proxy import ProxyProcess

_STEPS_DONE = re.compile(
    r'^pgdurable_steps_finished_total\{node_type="SQL",outcome="completed"\} (\S+)$', re.M
)
_RECOVERIES = re.compile(r"^pgdurable_lease_recoveries_total (\S+)$", re.M)
# The engine's plain counters (engine/metrics.py EngineCounters): which paths steps took.
_PATHS = re.compile(r"^pgdurable_(\w+)_total (\S+)$", re.M)
PATH_COUNTERS = (
    "advances",
    "first_steps",
    "first_steps_promoted",
    "chained_steps",
    "handed_over_steps",
    "in_step_advances_held",
    "in_step_advances_loaded",
    "lease_recoveries",
)
EPOCH_SQL = "SELECT epoch_id::text FROM df._worker_epoch"


@dataclass
class Fleet:
    """`processes[i]` fronts the database as lease owner `epochs[i]`; `logs[i]` is its log."""

    processes: list[ProxyProcess] = field(default_factory=list)
    epochs: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.process.pid for p in self.processes if p.process is not None)

    def client_dsns(self) -> tuple[str, ...]:
        return tuple(p.dsn(user=BENCH_ROLE, dbname=BENCH_DB) for p in self.processes)

    def _scrape(self, i: int) -> str | None:
        if i in self.killed:
            return None
        url = f"http://127.0.0.1:{self.processes[i].http_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def metric(self, i: int, pattern: re.Pattern[str]) -> int | None:
        """One counter of process i's /metrics (None: killed or not answering)."""
        text = self._scrape(i)
        m = pattern.search(text) if text is not None else None
        return int(float(m.group(1))) if m else None

    def paths(self) -> dict[str, int]:
        """PATH_COUNTERS summed over the living processes."""
        total = dict.fromkeys(PATH_COUNTERS, 0)
        for i in range(len(self.processes)):
            for name, value in _PATHS.findall(self._scrape(i) or ""):
                if name in total:
                    total[name] += int(float(value))
        return total

    def steps_completed(self) -> list[int | None]:
        """SQL steps each process has completed since it started."""
        return [self.metric(i, _STEPS_DONE) for i in range(len(self.processes))]

    def lease_recoveries(self) -> list[int | None]:
        """Tasks each process claimed after another's lease on them expired."""
        return [self.metric(i, _RECOVERIES) for i in range(len(self.processes))]

    def kill(self, i: int) -> None:
        """SIGKILL process i, as a crash would."""
        self.processes[i].kill()
        self.killed.add(i)

    def stop(self) -> list[str]:
        """SIGTERM all; the unexpected warning lines each logged."""
        problems = []
        for i, (proxy, path) in enumerate(zip(self.processes, self.logs, strict=True)):
            if proxy.process is not None and proxy.process.poll() is None:
                proxy.stop()
            count, lines = log_problems(path)
            if count and i not in self.killed:
                problems.append(f"pgdurable #{i + 1} logged {count} warning/error lines, e.g.:")
                problems += [f"  `{line[:300]}`" for line in lines[:5]]
        self.processes.clear()
        self.logs.clear()
        return problems


def _epochs(meter_dsn: str) -> set[str]:
    """The epochs in df._worker_epoch (none before the first pgdurable installs the catalog)."""
    with psycopg.connect(meter_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('df._worker_epoch') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return set()
        return {r[0] for r in conn.execute(EPOCH_SQL)}


def start_fleet(
    upstream_dsn: str, meter_dsn: str, n: int, logs: Path, proxy_args: list[str]
) -> Fleet:
    """Start n pgdurable processes on `upstream_dsn`, one after another, and learn each one's
    epoch from the df._worker_epoch row its start added (meter_dsn: direct, superuser)."""
    fleet = Fleet()
    try:
        for i in range(n):
            before = _epochs(meter_dsn)
            path = logs / f"pgdurable-{i + 1}.log"
            fleet.logs.append(path)
            fleet.processes.append(start_pgdurable(upstream_dsn, path, proxy_args))
            fleet.epochs.append(_new_epoch(meter_dsn, before))
    except BaseException:
        fleet.stop()
        raise
    log(f"{n} pgdurable process(es) on ports {[p.port for p in fleet.processes]}")
    return fleet


def _new_epoch(meter_dsn: str, before: set[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = _epochs(meter_dsn) - before
        if len(new) == 1:
            return new.pop()
        time.sleep(0.05)
    raise BenchError("a pgdurable process started but wrote no df._worker_epoch row")
