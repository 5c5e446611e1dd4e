"""Medians, target checks and the Markdown report of a passthrough run."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.bench.passthrough.measure import RunResult, Workload

# pgdurable-py: pgdurable with PGDURABLE_PURE_PYTHON=1 (its framing in Python)
TARGETS = ("direct", "pgdurable", "pgdurable-py", "pgbouncer", "pipe")

# Targets set from the baseline (PgBouncer 1.18 session mode, same machine):
# 0.64x direct TPS at -c 8 simple, ~12 us CPU per select-only transaction.
TPS_RATIO_TARGET = 0.64
CPU_US_TARGET = 15.0
# Issue 16: pgdurable's CPU per transaction within 5 % of the bare pipe's, same run, -c 8.
PIPE_CPU_RATIO_TARGET = 1.05
# A run counts as disturbed when CPU outside the benchmark exceeds this share of one core.
NOISE_SHARE = 0.05


@dataclass
class Summary:
    """The medians of one (workload, target) over its repeats."""

    target: str
    clients: int
    threads: int
    protocol: str
    runs_ok: int
    runs_failed: int
    tps_runs: list[float | None]
    tps: float | None = None
    latency_ms: float | None = None
    tps_ratio: float | None = None
    tps_ratio_paired: float | None = None
    added_latency_us: float | None = None
    cpu_us_per_txn: float | None = None
    cpu_ratio_to_pipe: float | None = None  # median of per-repeat ratios to the pipe's
    other_cpu_s_max: float | None = None
    errors: list[str] = field(default_factory=list)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: Sequence[RunResult], workloads: Sequence[Workload]) -> list[Summary]:
    """One Summary per (workload, target) that was run, in matrix order."""
    summaries: list[Summary] = []
    for wl in workloads:
        mine = [
            r
            for r in runs
            if (r.clients, r.threads, r.protocol) == (wl.clients, wl.threads, wl.protocol)
        ]
        direct_by_rep = {r.rep: r for r in mine if r.target == "direct" and r.ok}
        direct_tps = _median(r.tps for r in direct_by_rep.values())
        direct_lat = _median(r.latency_ms for r in direct_by_rep.values())
        pipe_by_rep = {r.rep: r for r in mine if r.target == "pipe" and r.ok}
        for target in TARGETS:
            rows = sorted((r for r in mine if r.target == target), key=lambda r: r.rep)
            if not rows:
                continue
            ok = [r for r in rows if r.ok]
            s = Summary(
                target=target,
                clients=wl.clients,
                threads=wl.threads,
                protocol=wl.protocol,
                runs_ok=len(ok),
                runs_failed=len(rows) - len(ok),
                tps_runs=[r.tps if r.ok else None for r in rows],
                errors=[r.error for r in rows if r.error],
            )
            s.other_cpu_s_max = max((r.other_cpu_s or 0.0) for r in rows)
            if ok:
                s.tps = _median(r.tps for r in ok)
                s.latency_ms = _median(r.latency_ms for r in ok)
                s.cpu_us_per_txn = _median(r.cpu_us_per_txn for r in ok)
                s.cpu_ratio_to_pipe = _paired_cpu_ratio(ok, pipe_by_rep)
            if s.tps is not None and direct_tps:
                s.tps_ratio = round(s.tps / direct_tps, 3)
                paired = [
                    r.tps / d.tps
                    for r in ok
                    if (d := direct_by_rep.get(r.rep)) is not None and r.tps and d.tps
                ]
                s.tps_ratio_paired = round(statistics.median(paired), 3) if paired else None
            if s.latency_ms is not None and direct_lat is not None:
                # -S sends one statement per transaction: one round trip (simple, and the
                # single Parse/Bind/Execute/Sync batch of extended/prepared).
                s.added_latency_us = round((s.latency_ms - direct_lat) * 1000, 1)
            summaries.append(s)
    return summaries


def _paired_cpu_ratio(ok: Sequence[RunResult], pipe_by_rep: dict[int, RunResult]) -> float | None:
    """Median over repeats of CPU µs/txn divided by the pipe's in the same repeat."""
    ratios = [
        r.cpu_us_per_txn / p.cpu_us_per_txn
        for r in ok
        if (p := pipe_by_rep.get(r.rep)) is not None and r.cpu_us_per_txn and p.cpu_us_per_txn
    ]
    return round(statistics.median(ratios), 3) if ratios else None


@dataclass(frozen=True)
class TargetCheck:
    name: str
    value: float | None
    limit: float
    passed: bool | None
    reference: str

    @property
    def verdict(self) -> str:
        return "N/A" if self.passed is None else ("PASS" if self.passed else "MISS")


def _find(summaries: Sequence[Summary], target: str, clients: int, protocol: str) -> Summary | None:
    for s in summaries:
        if (s.target, s.clients, s.protocol) == (target, clients, protocol):
            return s
    return None


def check_targets(summaries: Sequence[Summary]) -> list[TargetCheck]:
    """pgdurable vs the targets at -c 8 (the CPU-bound runs where batching happens)."""
    checks: list[TargetCheck] = []
    pgd = _find(summaries, "pgdurable", 8, "simple")
    bouncer = _find(summaries, "pgbouncer", 8, "simple")
    ratio = pgd.tps_ratio if pgd else None
    checks.append(
        TargetCheck(
            name=f"pgdurable TPS >= {TPS_RATIO_TARGET}x direct (-c 8 -j 2, simple)",
            value=ratio,
            limit=TPS_RATIO_TARGET,
            passed=None if ratio is None else ratio >= TPS_RATIO_TARGET,
            reference=f"pgbouncer here: {_fmt(bouncer.tps_ratio if bouncer else None, 2)}x",
        )
    )
    for protocol in ("simple", "extended", "prepared"):
        pgd = _find(summaries, "pgdurable", 8, protocol)
        bouncer = _find(summaries, "pgbouncer", 8, protocol)
        cpu = pgd.cpu_us_per_txn if pgd else None
        checks.append(
            TargetCheck(
                name=f"pgdurable CPU <= {CPU_US_TARGET:g} µs per select-only txn "
                f"(-c 8 -j 2, {protocol})",
                value=cpu,
                limit=CPU_US_TARGET,
                passed=None if cpu is None else cpu <= CPU_US_TARGET,
                reference=_bouncer_cpu(bouncer),
            )
        )
    for protocol in ("simple", "extended", "prepared"):
        pgd = _find(summaries, "pgdurable", 8, protocol)
        ratio = pgd.cpu_ratio_to_pipe if pgd else None
        checks.append(
            TargetCheck(
                name=f"pgdurable CPU per txn <= {PIPE_CPU_RATIO_TARGET:g}x the bare pipe's "
                f"(-c 8 -j 2, {protocol}; median of per-repeat ratios)",
                value=ratio,
                limit=PIPE_CPU_RATIO_TARGET,
                passed=None if ratio is None else ratio <= PIPE_CPU_RATIO_TARGET,
                reference="issue 16",
            )
        )
    return checks


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(
    meta: dict[str, Any],
    summaries: Sequence[Summary],
    checks: Sequence[TargetCheck],
    workloads: Sequence[Workload],
) -> str:
    """The report: one table per workload, then the target checks."""
    lines = [
        "# pgdurable passthrough benchmark (pgbench -n -S)",
        "",
        f"- {meta['started']} on {meta['host']['nproc']} CPUs; PostgreSQL: {meta['postgres']}; "
        f"pgbench: {meta['pgbench']}; pgbouncer: {meta['pgbouncer'] or 'not run'}",
        f"- pgdurable {meta['pgdurable_rev']} (framing: {meta.get('pgdurable_framing', '?')}), "
        f"Python {meta['python']}, uvloop {meta['uvloop']}",
        f"- -T {meta['duration_s']} s, {meta['repeats']} interleaved repeats, medians shown; "
        f"scale {meta['scale']}; settings {meta['pg_settings']}; pgbouncer session mode, "
        f"default_pool_size {meta['pgbouncer_pool_size']}",
        f"- each run waits up to {meta['quiet_wait_s']:g} s for a quiet 1 s window and is "
        f"re-run up to {meta['retries']}x when outside load exceeds {NOISE_SHARE:.0%} of a core",
        "- TPS ratio = median TPS / median direct TPS (paired = median of per-repeat ratios); "
        "added latency = median latency - direct's, per round trip (1 per -S txn; "
        "meaningful at -c 1, at -c 8 it is mostly CPU contention); CPU µs/txn = "
        "utime+stime of the proxy process / transactions",
        "- other CPU-s = busy CPU not used by the benchmark's processes during a run "
        "(load from elsewhere; highest of the repeats)",
        "",
    ]
    for wl in workloads:
        rows = [
            s
            for s in summaries
            if (s.clients, s.threads, s.protocol) == (wl.clients, wl.threads, wl.protocol)
        ]
        if not rows:
            continue
        lines += [
            f"## S_{wl.protocol}  (-c {wl.clients} -j {wl.threads} -T {meta['duration_s']})",
            "",
            "| target | median TPS | median avg latency ms | TPS ratio vs direct (paired) "
            "| added latency µs/rt | proxy CPU µs/txn (× pipe) | other CPU-s | runs (TPS) |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in rows:
            runs = ", ".join("FAILED" if t is None else f"{t:.0f}" for t in s.tps_runs)
            if s.tps is None:
                lines.append(f"| {s.target} | FAILED | | | | | | {runs} |")
                continue
            ratio = f"{_fmt(s.tps_ratio, 2)} ({_fmt(s.tps_ratio_paired, 2)})"
            added = (
                "-"
                if s.target == "direct" or s.added_latency_us is None
                else f"{s.added_latency_us:+.1f}"
            )
            lines.append(
                f"| {s.target} | {s.tps:,.0f} | {s.latency_ms:.3f} | {ratio} | {added} "
                f"| {_fmt(s.cpu_us_per_txn, 1)}{_times_pipe(s)} | {_fmt(s.other_cpu_s_max, 2)} "
                f"| {runs} |"
            )
        lines.append("")
    lines += ["## Targets", ""]
    for c in checks:
        value = "-" if c.value is None else f"{c.value:.2f}"
        lines.append(f"- **{c.verdict}** {c.name}: {value} ({c.reference})")
    lines += [
        "",
        "CPU per txn at -c 1 is not a target: with one client nothing batches and every "
        "message costs a wake-up (the baseline's PgBouncer used ~40 µs there).",
    ]
    noisy = meta.get("noisy_runs", [])
    if noisy:
        lines += [
            "",
            f"**Warning**: {len(noisy)} run(s) saw outside CPU load above "
            f"{NOISE_SHARE:.0%} of one core: {', '.join(noisy)}",
        ]
    errors = [f"{s.target} {s.protocol} -c {s.clients}: {e}" for s in summaries for e in s.errors]
    if errors:
        lines += ["", "Errors:", *[f"- {e}" for e in errors]]
    return "\n".join(lines) + "\n"


def _times_pipe(s: Summary) -> str:
    if s.target == "pipe" or s.cpu_ratio_to_pipe is None:
        return ""
    return f" ({s.cpu_ratio_to_pipe:.2f}×)"


def _bouncer_cpu(bouncer: Any) -> str:
    """PgBouncer's CPU per transaction in the same run, for the target lines."""
    return f"pgbouncer here: {_fmt(bouncer.cpu_us_per_txn if bouncer else None, 1)} µs"
