"""The scale benchmark's Markdown: the five operations empty vs loaded, and the pass."""

from __future__ import annotations

from collections.abc import Mapping

from tests.bench.scale.measure import Timing
from tests.bench.scale.retention import RetentionPass, StartProbe
from tests.bench.workflows.servers import BENCH_ROLE

MAX_RATIO = 2.0
MAX_START_MS = 50.0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _starts(p: StartProbe) -> str:
    return (
        f"{p.calls} calls, median {p.median_ms:.2f} ms, p99 {p.p99_ms:.2f} ms, "
        f"max {p.max_ms:.2f} ms, {p.over_50ms} over {MAX_START_MS:g} ms"
    )


def _waits(top: object) -> str:
    if not isinstance(top, list) or not top:
        return "never seen active"
    return ", ".join(f"{event} {count}" for event, count in top)


def markdown(
    meta: Mapping[str, object],
    empty: Mapping[str, Timing],
    loaded: Mapping[str, Timing],
    starts: tuple[StartProbe, StartProbe],
    pruned: RetentionPass,
) -> str:
    lines = [
        f"pgdurable {meta['pgdurable_rev']}, {meta['postgres']}, "
        f"{meta['instances']:,} finished instances loaded in {meta['load_seconds']} s, "
        f"{meta['reps']} calls per operation",
        "",
        "| operation | empty median / p90 ms | loaded median / p90 ms | ratio (median) "
        f"| ≤ {MAX_RATIO:g}× |",
        "|---|---:|---:|---:|---|",
    ]
    for name, before in empty.items():
        after = loaded[name]
        ratio = after.median_ms / before.median_ms
        lines.append(
            f"| {name} | {before.median_ms:.2f} / {before.p90_ms:.2f} "
            f"| {after.median_ms:.2f} / {after.p90_ms:.2f} | {ratio:.2f} "
            f"| {_verdict(ratio <= MAX_RATIO)} |"
        )
    lines += [
        "",
        f"Retention pass (`{meta['retention_args']}`, "
        f"pgdurable's `event=retention_pass`): pruned {pruned.pruned:,} instances "
        f"({pruned.by_age:,} by age, {pruned.by_cap:,} by cap) in {pruned.seconds:.1f} s; "
        f"{meta['instances_left']:,} instances left.",
        "",
        f"df.start('SELECT 1') every 20 ms, as `{BENCH_ROLE}`: {_starts(starts[0])} while "
        f"the pass ran: **{_verdict(starts[0].max_ms <= MAX_START_MS)}** "
        f"(max ≤ {MAX_START_MS:g} ms); {_starts(starts[1])} before and after it (after it "
        "for as long as the pass took, at most a minute: the machine without a pass). "
        f"Lock waits over 10 ms PostgreSQL logged meanwhile (`log_lock_waits`, "
        f"`deadlock_timeout = 10ms`): {meta['lock_waits_over_10ms']} (none: no df.start "
        "waited for the pass's locks: "
        f"**{_verdict(meta['lock_waits_over_10ms'] == 0)}**). What the df.start "
        f"backends were doing when seen active ({meta['wait_samples']} samples of "
        f"pg_stat_activity, every 5 ms): {_waits(meta['df_start_waits'])}.",
    ]
    return "\n".join(lines) + "\n"
