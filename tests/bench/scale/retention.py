"""df.start every 20 ms while pgdurable's retention pass deletes the expired instances."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

PASS_LINE = re.compile(
    r"ts=(\S+ \S+) .*event=retention_pass pruned=(\d+) by_age=(\d+) by_cap=(\d+) "
    r"seconds=([0-9.]+)"
)


@dataclass(frozen=True)
class RetentionPass:
    """The first `event=retention_pass` line that pruned something."""

    pruned: int
    by_age: int
    by_cap: int
    seconds: float
    ended_at: float  # epoch seconds, from the line's timestamp

    @property
    def started_at(self) -> float:
        return self.ended_at - self.seconds


@dataclass(frozen=True)
class Call:
    """One df.start: wall-clock start and end (epoch s) and its latency (ms)."""

    began: float
    ended: float
    ms: float


@dataclass(frozen=True)
class StartProbe:
    """Latencies (ms) of df.start calls."""

    calls: int
    median_ms: float
    p99_ms: float
    max_ms: float
    over_50ms: int


def first_pass(log: Path) -> RetentionPass | None:
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        m = PASS_LINE.search(line)
        if m and int(m.group(2)) > 0:
            ended = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            return RetentionPass(
                int(m.group(2)), int(m.group(3)), int(m.group(4)), float(m.group(5)), ended
            )
    return None


def summary(calls: Sequence[Call]) -> StartProbe:
    ordered = sorted(c.ms for c in calls) or [0.0]
    return StartProbe(
        calls=len(calls),
        median_ms=ordered[len(ordered) // 2],
        p99_ms=ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        max_ms=ordered[-1],
        over_50ms=sum(1 for s in ordered if s > 50),
    )


def probe_starts(
    client_dsn: str, log: Path, every_s: float, timeout_s: float, tail_s: float = 60.0
) -> tuple[list[Call], RetentionPass]:
    """Call df.start('SELECT 1') every `every_s` until the first pass that pruned something
    is logged, then as long again (at most `tail_s`): a baseline without a pass, under
    whatever else loads the machine then; every call, and the pass."""
    calls: list[Call] = []
    seen: RetentionPass | None = None
    stop_at = time.monotonic() + timeout_s
    with psycopg.connect(client_dsn, autocommit=True, prepare_threshold=None) as conn:
        next_call = time.monotonic()
        while time.monotonic() < stop_at:
            began, t0 = time.time(), time.perf_counter()
            conn.execute("SELECT df.start('SELECT 1')").fetchone()
            calls.append(Call(began, time.time(), (time.perf_counter() - t0) * 1000))
            if seen is None and len(calls) % 5 == 0:
                seen = first_pass(log)
                if seen is not None:
                    stop_at = time.monotonic() + min(tail_s, max(1.0, seen.seconds))
            next_call += every_s
            time.sleep(max(0.0, next_call - time.monotonic()))
    if seen is None:
        raise RuntimeError(f"no retention pass logged within {timeout_s} s; see {log}")
    return calls, seen


def split(calls: Sequence[Call], pruned: RetentionPass) -> tuple[StartProbe, StartProbe]:
    """The calls that overlapped the pass, and the others (before it started, after it)."""
    overlaps = [c.ended >= pruned.started_at and c.began <= pruned.ended_at for c in calls]
    during = [c for c, overlapping in zip(calls, overlaps, strict=True) if overlapping]
    others = [c for c, overlapping in zip(calls, overlaps, strict=True) if not overlapping]
    return summary(during), summary(others)
