"""Two pgdurable processes on one database share the work instead of all doing it: a
df.start goes to one engine (the one whose relay the session came through, which it hands
the new instance, else the one whose share the backend's PID falls in, which it wakes), and
each instance is advanced by one process.

Both run with a 30 s poll interval, so that every scheduler pass counted here was a
wake-up; a 3 s lease makes them beat (and learn of each other) every second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database
from tests.support.metrics import read_metrics
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status

DATABASE = "scale_out"
ROLE = "scale_out_user"
ARGS = ["--poll-interval", "30", "--lease-seconds", "3"]
STEP = "'SELECT 1'"


@pytest.fixture(scope="module")
def pair(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ProxyProcess]]:
    create_database(cluster, DATABASE)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN")
    logs = tmp_path_factory.mktemp("scale-out")
    upstream = cluster.dsn(dbname=DATABASE)
    first = ProxyProcess(upstream, extra_args=ARGS, log_path=logs / "a.log").start()
    second = ProxyProcess(upstream, extra_args=ARGS, log_path=logs / "b.log").start()
    try:
        with psycopg.connect(first.dsn(dbname=DATABASE), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage(%s)", (ROLE,))
        _await_engines(cluster, 2)
        time.sleep(1.5)  # a heartbeat of each since both were registered
        yield [first, second]
    finally:
        for proxy in (first, second):
            proxy.stop()


def _await_engines(cluster: Cluster, count: int) -> None:
    deadline = time.monotonic() + 20
    with psycopg.connect(cluster.dsn(dbname=DATABASE), autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM df._worker_epoch").fetchone()
            if row is not None and row[0] == count:
                return
            assert time.monotonic() < deadline, f"{row} engines registered, not {count}"
            time.sleep(0.1)


def _passes(proxies: list[ProxyProcess]) -> list[int]:
    return [int(read_metrics(p.http_port)["scheduler_passes_total"]) for p in proxies]


def _start_all(dsns: list[str], per_dsn: int) -> list[str]:
    """Start `per_dsn` workflows on each DSN, one connection each, at once; wait for all."""

    def run(dsn: str) -> list[str]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return [
                str(conn.execute(f"SELECT df.start({STEP})").fetchone()[0])  # type: ignore[index]
                for _ in range(per_dsn)
            ]

    with ThreadPoolExecutor(len(dsns)) as pool:
        started = [i for ids in pool.map(run, dsns) for i in ids]
    return started


def _all_completed(dsn: str, instances: list[str]) -> None:
    for instance in instances:  # well within the 30 s poll interval
        assert await_status(dsn, instance, 10) == "completed"


def _announced(proxy: ProxyProcess) -> int:
    return int(read_metrics(proxy.http_port)["first_steps_announced_total"])


def test_a_start_through_one_process_is_taken_by_its_engine_without_a_pass(
    pair: list[ProxyProcess],
) -> None:
    # the df.start claims the instance for the relaying engine and hands it the first
    # document: neither engine makes a scheduler pass for it
    first = pair[0]
    before, announced = _passes(pair), _announced(first)
    started = _start_all([first.dsn(ROLE, dbname=DATABASE)] * 4, per_dsn=5)
    _all_completed(first.dsn(ROLE, dbname=DATABASE), started)
    assert _passes(pair) == before
    assert _announced(first) - announced == len(started)


def test_a_start_from_a_direct_client_wakes_one_engine(
    pair: list[ProxyProcess], cluster: Cluster
) -> None:
    # sixteen sessions straight to PostgreSQL, one after the other, each waiting for its
    # workflow: their backends' PIDs fall in both shares
    direct = cluster.dsn(ROLE, dbname=DATABASE)
    before = _passes(pair)
    for _ in range(16):
        with psycopg.connect(direct, autocommit=True) as conn:
            row = conn.execute(f"SELECT df.start({STEP})").fetchone()
            assert row is not None
            done = conn.execute("SELECT df.await_instance(%s, 10)", (row[0],)).fetchone()
            assert done == ("completed",)
    after = _passes(pair)
    woken = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(woken) <= 16 + 2, woken  # one pass per start, not one per engine
    assert all(w > 0 for w in woken), woken


def test_each_instance_is_advanced_by_one_process(pair: list[ProxyProcess]) -> None:
    # started through both relays at once: every step ran exactly once, by one engine
    dsns = [p.dsn(ROLE, dbname=DATABASE) for p in pair]
    before = [read_metrics(p.http_port) for p in pair]
    started = _start_all(dsns * 4, per_dsn=10)
    _all_completed(dsns[0], started)
    after = [read_metrics(p.http_port) for p in pair]
    key = 'steps_finished_total{node_type="SQL",outcome="completed"}'
    steps = [a[key] - b[key] for a, b in zip(after, before, strict=True)]
    assert sum(steps) == len(started), steps
    for proxy in pair:  # no process took a first step another one had taken
        assert proxy.log_path is not None
        assert "event=first_step_deferred" not in proxy.log_path.read_text()


def test_a_relayed_start_wakes_its_engine_once_committed(pair: list[ProxyProcess]) -> None:
    # a relayed session notifies nothing: its df.start's notice (the new instance's first
    # document) reaches the relay as the statement runs, and the relay hands it to its
    # engine once the session is idle again (a first step before the commit would find
    # nothing, and the next pass is 30 s away)
    first = pair[0]
    with psycopg.connect(first.dsn(ROLE, dbname=DATABASE), autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({STEP}), pg_sleep(0.5)").fetchone()
        assert row is not None
        done = conn.execute("SELECT df.await_instance(%s, 10)", (row[0],)).fetchone()
    assert done == ("completed",)
