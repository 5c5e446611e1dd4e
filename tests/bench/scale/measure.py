"""The five operations timed through pgdurable's port, as the bench role."""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

FINISHED = ("completed", "failed", "cancelled", "compensated")
OPERATIONS = (
    "df.status",
    "df.result",
    "df.status, recent instance",
    "df.result, recent instance",
    "df.list_instances first page",
    "/metrics scrape",
    "hello world start→completed",
)


@dataclass(frozen=True)
class Timing:
    """Milliseconds of `reps` calls of one operation."""

    median_ms: float
    p90_ms: float
    reps: int


def timing(samples_ms: Sequence[float]) -> Timing:
    ordered = sorted(samples_ms)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return Timing(statistics.median(ordered), p90, len(ordered))


def _timed(call: Callable[[int], object], reps: int) -> Timing:
    samples = []
    for i in range(reps):
        t0 = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return timing(samples)


def hello_world(
    conn: psycopg.Connection[tuple[object, ...]], poll_s: float, timeout_s: float = 30.0
) -> str:
    """df.start('SELECT 1'), then df.status until it is finished; the instance id."""
    row = conn.execute("SELECT df.start('SELECT 1')").fetchone()
    assert row is not None
    instance = str(row[0])
    deadline = time.monotonic() + timeout_s
    while True:
        status = conn.execute("SELECT df.status(%s)", (instance,)).fetchone()
        if status is not None and status[0] in FINISHED:
            if status[0] != "completed":
                raise RuntimeError(f"hello world {instance} ended {status[0]}")
            return instance
        if time.monotonic() > deadline:
            raise RuntimeError(f"hello world {instance} still {status} after {timeout_s} s")
        time.sleep(poll_s)


def measure_all(
    client_dsn: str,
    metrics_url: str,
    ids: tuple[Sequence[str], Sequence[str]],
    reps: int,
    poll_s: float,
) -> dict[str, Timing]:
    """Each operation `reps` times (after a few warm-up calls). df.status and df.result cycle
    through `ids[0]` (completed instances, spread over the catalog), their "recent instance"
    rows through `ids[1]` (the hello worlds run first: the instances a client just started)."""
    spread, recent = ids
    out: dict[str, Timing] = {}
    with psycopg.connect(client_dsn, autocommit=True, prepare_threshold=None) as conn:

        def status_of(pool: Sequence[str]) -> Callable[[int], None]:
            def status(i: int) -> None:
                conn.execute("SELECT df.status(%s)", (pool[i % len(pool)],)).fetchone()

            return status

        def result_of(pool: Sequence[str]) -> Callable[[int], None]:
            def result(i: int) -> None:
                row = conn.execute("SELECT df.result(%s)", (pool[i % len(pool)],)).fetchone()
                if row is None or row[0] is None:
                    raise RuntimeError(f"df.result({pool[i % len(pool)]}) gave no result")

            return result

        def first_page(i: int) -> None:
            rows = conn.execute("SELECT * FROM df.list_instances(limit_count => 50)").fetchall()
            if len(rows) != 50:
                raise RuntimeError(f"df.list_instances gave {len(rows)} rows, not 50")

        def scrape(i: int) -> None:
            with urllib.request.urlopen(metrics_url, timeout=10) as resp:
                resp.read()

        def hello(i: int) -> None:
            hello_world(conn, poll_s)

        calls = (
            status_of(spread),
            result_of(spread),
            status_of(recent),
            result_of(recent),
            first_page,
            scrape,
            hello,
        )
        for name, call in zip(OPERATIONS, calls, strict=True):
            _timed(call, 5)  # warm-up: plans cached, connections open
            out[name] = _timed(call, reps)
    return out
