"""Summaries (median, p90, all values), the two targets, and the Markdown report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.bench.dsl.scenarios import ScenarioResult

JOIN_TARGET_MS = 50.0  # client-observed median JOIN overhead (pg_durable: ≈ 2.1 s)
SIGNAL_TARGET_MS = 20.0  # p50 signal → resumed, server clock
JOIN_METRIC = "client: start → completed seen − 2 s"
SIGNAL_METRIC = "server: resumed − signal clock_timestamp()"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 3) if values else None,
        "p90_ms": percentile(values, 90),
        "min_ms": min(values, default=None),
        "max_ms": max(values, default=None),
        "values_ms": list(values),
    }


@dataclass(frozen=True)
class TargetCheck:
    name: str
    goal: str
    measured: str
    passed: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _check(
    results: Sequence[ScenarioResult], scenario: str, metric: str, name: str, limit: float
) -> TargetCheck:
    values = next((r.metrics.get(metric, []) for r in results if r.name == scenario), [])
    if not values:
        return TargetCheck(name, f"≤ {limit:g} ms", "not measured", None)
    median = statistics.median(values)
    p90 = percentile(values, 90)
    return TargetCheck(
        name,
        f"≤ {limit:g} ms",
        f"{median:.1f} ms (p90 {_ms(p90)} ms, n={len(values)})",
        median <= limit,
    )


def check_targets(results: Sequence[ScenarioResult]) -> list[TargetCheck]:
    return [
        _check(results, "join", JOIN_METRIC, "JOIN overhead p50 (client)", JOIN_TARGET_MS),
        _check(results, "signal", SIGNAL_METRIC, "signal → resumed p50", SIGNAL_TARGET_MS),
    ]


def _table(results: Sequence[ScenarioResult]) -> list[str]:
    lines = [
        "| scenario | metric | n | median ms | p90 ms | min ms | max ms | all values ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r.metrics:
            lines.append(f"| {r.title} | (no successful repeat) | 0 | - | - | - | - | - |")
        for metric, values in r.metrics.items():
            s = summary(values)
            every = ", ".join(f"{v:.1f}" for v in values)
            lines.append(
                f"| {r.title} | {metric} | {s['n']} | {_ms(s['median_ms'])} | "
                f"{_ms(s['p90_ms'])} | {_ms(s['min_ms'])} | {_ms(s['max_ms'])} | {every} |"
            )
    return [*lines, ""]


def _graphs(results: Sequence[ScenarioResult]) -> list[str]:
    lines = ["Workflows (`SELECT df.start(…)`, one at a time):", ""]
    lines += [f"* {r.title}: `{r.graph}`" for r in results]
    return [*lines, ""]


NOTES = [
    "What is measured:",
    "",
    "* **client** figures: `time.perf_counter()` just before the `df.start` (or `df.signal`) "
    "round trip to the first `df.status` poll that returned `completed`; a second "
    "connection polls every {poll_ms:g} ms, so they include up to one poll interval plus "
    "one round trip through pgdurable.",
    "* **server** figures use PostgreSQL's clock on both sides: `df.instances.created_at` "
    "(the `df.start` transaction's `now()`), `completed_at`, and `clock_timestamp()` "
    "returned by the workflow's last SQL step (`resumed`, `woke`) or taken in the statement "
    "that sends the signal (`SELECT clock_timestamp(), df.signal(id, 'go', '{{}}')`, sent "
    "once the SIGNAL node is `running`).",
    "* RACE **loser gone**: pg_stat_activity (direct superuser connection) is polled from "
    "0.5 s into the race until no backend is `active` with the losing branch's SQL; "
    "negative = cancelled before the instance's completion was recorded.",
    "* Loop pacing (when run): the body inserts `clock_timestamp()` per iteration; the "
    "interval between iterations minus pgdurable's `--min-loop-iteration-seconds`.",
    "",
]


def markdown(
    meta: dict[str, Any], results: Sequence[ScenarioResult], checks: Sequence[TargetCheck]
) -> str:
    lines = [
        "## DSL latency benchmark: pgdurable",
        "",
        f"{meta['started']}, {meta['postgres']} (defaults, fsync on), "
        f"{meta['host']['nproc']} CPUs (load {meta['host']['loadavg_start'][0]:.2f} at start, "
        f"{meta['host']['loadavg_end'][0]:.2f} at end), pgdurable {meta['pgdurable_rev']} "
        f"(`{' '.join(meta['pgdurable_args'])}`), {meta['repeats']} repeats, "
        f"poll {meta['poll_ms']:g} ms; Python {meta['python']}.",
        "",
        *_table(results),
        "### Targets",
        "",
        "| target | goal | measured | verdict |",
        "|---|---|---|---|",
        *[f"| {c.name} | {c.goal} | {c.measured} | **{c.verdict}** |" for c in checks],
        "",
        *[c.verdict + f": {c.name} {c.measured} (goal {c.goal})" for c in checks],
        "",
        *_graphs(results),
        *[line.format(poll_ms=meta["poll_ms"]) for line in NOTES],
    ]
    problems = list(meta.get("problems") or [])
    for r in results:
        problems += [f"{r.title}: {e}" for e in r.errors]
    if problems:
        lines += ["### Problems seen", ""]
        lines += [f"  * {p.strip()}" if p.startswith("  ") else f"* {p}" for p in problems]
        lines.append("")
    return "\n".join(lines)
