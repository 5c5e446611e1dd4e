"""One pgbench run and the CPU it cost: pgbench output parsing and /proc accounting."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
USER = "postgres"


@dataclass(frozen=True)
class Workload:
    """The pgbench shape: clients, threads and query protocol (always select-only)."""

    clients: int
    threads: int
    protocol: str  # simple | extended | prepared

    @property
    def label(self) -> str:
        return f"-c {self.clients} -j {self.threads} -M {self.protocol}"


@dataclass(frozen=True)
class ProcTimes:
    """CPU counters of one process from /proc/<pid>/stat, in clock ticks."""

    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own(self) -> int:
        return self.utime + self.stime

    @property
    def with_reaped_children(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def read_proc_times(pid: int) -> ProcTimes | None:
    """The counters of `pid` (all its threads), or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid=4, utime=14, stime=15, cutime=16, cstime=17
    return ProcTimes(
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def _all_processes() -> dict[int, ProcTimes]:
    procs: dict[int, ProcTimes] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            times = read_proc_times(int(entry.name))
            if times is not None:
                procs[int(entry.name)] = times
    return procs


def _tree_ticks(procs: Mapping[int, ProcTimes], roots: Iterable[int]) -> int:
    """CPU of the live processes under `roots` plus the children they have reaped."""
    children: dict[int, list[int]] = {}
    for pid, times in procs.items():
        children.setdefault(times.ppid, []).append(pid)
    total, stack, seen = 0, [r for r in roots if r in procs], set[int]()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += procs[pid].with_reaped_children
        stack.extend(children.get(pid, ()))
    return total


def _system_busy_ticks() -> int:
    """user+nice+system of all CPUs (the time that process counters can account for)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[1]) + int(fields[2]) + int(fields[3])


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters taken just before or just after one pgbench run."""

    target_ticks: int | None
    ours_ticks: int
    busy_ticks: int

    @classmethod
    def take(cls, target_pid: int | None, roots: Iterable[int]) -> CpuSnapshot:
        procs = _all_processes()
        target = procs.get(target_pid) if target_pid is not None else None
        return cls(
            target_ticks=target.own if target is not None else None,
            ours_ticks=_tree_ticks(procs, roots),
            busy_ticks=_system_busy_ticks(),
        )


def outside_cpu_s(roots: Iterable[int], seconds: float) -> float:
    """CPU-seconds used outside the trees under `roots` during the next `seconds`."""
    roots = tuple(roots)
    before = CpuSnapshot.take(None, roots)
    time.sleep(seconds)
    after = CpuSnapshot.take(None, roots)
    other = (after.busy_ticks - before.busy_ticks) - (after.ours_ticks - before.ours_ticks)
    return max(other, 0) / CLK_TCK


@dataclass(frozen=True)
class PgbenchOutput:
    """What a pgbench run printed."""

    tps: float
    latency_ms: float
    transactions: int
    failed: int


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_TXNS = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


def parse_pgbench(stdout: str) -> PgbenchOutput:
    """Pick TPS, average latency and transaction counts out of pgbench's report."""
    tps, latency, txns = _TPS.search(stdout), _LATENCY.search(stdout), _TXNS.search(stdout)
    if tps is None or latency is None or txns is None:
        raise ValueError(f"unexpected pgbench output:\n{stdout}")
    failed = _FAILED.search(stdout)
    return PgbenchOutput(
        tps=float(tps.group(1)),
        latency_ms=float(latency.group(1)),
        transactions=int(txns.group(1)),
        failed=int(failed.group(1)) if failed else 0,
    )


@dataclass
class RunResult:
    """One measured pgbench run (a row of the JSON output)."""

    rep: int
    target: str
    clients: int
    threads: int
    protocol: str
    duration_s: int
    ok: bool
    tps: float | None = None
    latency_ms: float | None = None
    transactions: int | None = None
    failed: int | None = None
    target_cpu_s: float | None = None
    cpu_us_per_txn: float | None = None
    other_cpu_s: float | None = None
    wall_s: float | None = None
    attempts: int = 1
    quiet_wait_s: float = 0.0
    error: str | None = None


def pgbench_command(
    pgbench: Path, port: int, dbname: str, workload: Workload, duration_s: int
) -> list[str]:
    return [
        str(pgbench),
        "-h",
        HOST,
        "-p",
        str(port),
        "-U",
        USER,
        "-n",
        "-S",
        "-M",
        workload.protocol,
        "-c",
        str(workload.clients),
        "-j",
        str(workload.threads),
        "-T",
        str(duration_s),
        dbname,
    ]


def run_pgbench(
    pgbench: Path,
    port: int,
    dbname: str,
    workload: Workload,
    duration_s: int,
    *,
    rep: int,
    target: str,
    target_pid: int | None,
    roots: Iterable[int],
) -> RunResult:
    """Run `pgbench -n -S` against one port, with the CPU of `target_pid` around it.

    `roots` are the processes whose trees count as the benchmark's own work (this process,
    the postmaster); whatever else the machine did meanwhile is reported as other_cpu_s.
    """
    roots = tuple(roots)
    result = RunResult(
        rep=rep,
        target=target,
        clients=workload.clients,
        threads=workload.threads,
        protocol=workload.protocol,
        duration_s=duration_s,
        ok=False,
    )
    before = CpuSnapshot.take(target_pid, roots)
    start = time.monotonic()
    proc = subprocess.run(
        pgbench_command(pgbench, port, dbname, workload, duration_s),
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
    )
    result.wall_s = round(time.monotonic() - start, 3)
    after = CpuSnapshot.take(target_pid, roots)
    busy = after.busy_ticks - before.busy_ticks
    ours = after.ours_ticks - before.ours_ticks
    result.other_cpu_s = round(max(busy - ours, 0) / CLK_TCK, 2)
    if proc.returncode != 0:
        result.error = f"pgbench rc={proc.returncode}: {proc.stderr.strip()[-500:]}"
        return result
    try:
        out = parse_pgbench(proc.stdout)
    except ValueError as exc:
        result.error = str(exc)[-500:]
        return result
    result.ok = out.failed == 0
    if out.failed:
        result.error = f"{out.failed} failed transactions"
    result.tps, result.latency_ms = round(out.tps, 1), out.latency_ms
    result.transactions, result.failed = out.transactions, out.failed
    if before.target_ticks is not None and after.target_ticks is not None:
        cpu_s = (after.target_ticks - before.target_ticks) / CLK_TCK
        result.target_cpu_s = round(cpu_s, 2)
        if out.transactions:
            result.cpu_us_per_txn = round(cpu_s * 1e6 / out.transactions, 2)
    return result
