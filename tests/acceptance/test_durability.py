"""Durable means durable: SIGKILL pgdurable (and crash PostgreSQL) mid-run; nothing is lost
or done twice."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import FLAVORS, make_cluster, remove_cluster
from tests.support.proxy import ProxyProcess

WORKFLOWS = 210
STEP = "INSERT INTO ledger (instance_id, step) VALUES ('{{sys_instance_id}}', {n})"
GRAPH = (
    f"$${STEP.format(n=1)}$$ ~> 'SELECT pg_sleep(0.2 + 0.2 * random())' ~> $${STEP.format(n=2)}$$"
    f" ~> $${STEP.format(n=3)}$$"
)
ARGS = ["--lease-seconds", "2", "--poll-interval", "0.2"]


@pytest.fixture(scope="module")
def crash_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("durability")
    cluster = make_cluster(FLAVORS[0], root)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE worker LOGIN")
        conn.execute(
            "CREATE TABLE ledger (instance_id text, step int, at timestamptz DEFAULT now())"
        )
        conn.execute("GRANT INSERT, SELECT ON ledger TO worker")
    yield cluster
    remove_cluster(cluster)


def _start(dsn: str, count: int) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET ROLE worker")
        return [conn.execute(f"SELECT df.start({GRAPH})").fetchone()[0] for _ in range(count)]  # type: ignore[index]


def _grant(cluster: Cluster) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage('worker')")


def _wait_all_done(cluster: Cluster, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT id, status FROM df.instances WHERE id = ANY(%s)", (ids,)
            ).fetchall()
            statuses = dict(rows)  # type: ignore[arg-type]
            if all(s in ("completed", "failed", "cancelled") for s in statuses.values()) and len(
                statuses
            ) == len(ids):
                return statuses
            if time.monotonic() > deadline:
                pending = {k: v for k, v in statuses.items() if v not in ("completed",)}
                raise AssertionError(f"not finished: {list(pending.items())[:10]}")
            time.sleep(0.2)


def _failures(cluster: Cluster, ids: list[str]) -> str:
    with psycopg.connect(cluster.dsn()) as conn:
        rows = conn.execute(
            "SELECT instance_id, node_type, result #>> '{}' FROM df.nodes "
            "WHERE instance_id = ANY(%s) AND status = 'failed'",
            (ids,),
        ).fetchall()
    return "\n".join(map(str, rows[:10]))


def _assert_exactly_once(cluster: Cluster, ids: list[str]) -> None:
    with psycopg.connect(cluster.dsn()) as conn:
        bad = conn.execute(
            "SELECT i.id, s.step, count(l.*) FROM unnest(%s::text[]) i(id) "
            "CROSS JOIN generate_series(1, 3) s(step) "
            "LEFT JOIN ledger l ON l.instance_id = i.id AND l.step = s.step "
            "GROUP BY 1, 2 HAVING count(l.*) <> 1",
            (ids,),
        ).fetchall()
    assert bad == [], f"steps not run exactly once: {bad[:10]}"


def test_sigkill_at_random_instants_loses_nothing(crash_cluster: Cluster, tmp_path: Path) -> None:
    log = tmp_path / "pgdurable.log"
    proxy = ProxyProcess(crash_cluster.dsn(), log_path=log, extra_args=ARGS).start()
    _grant(crash_cluster)
    second = ProxyProcess(crash_cluster.dsn(), log_path=log, extra_args=ARGS).start()
    ids: list[str] = []
    rng = random.Random(4)
    try:
        for round_no in range(7):
            # starts both through pgdurable and directly against PostgreSQL
            ids += _start(proxy.dsn(), 15)
            ids += _start(crash_cluster.dsn(), 15)
            if round_no % 2 == 0:
                proxy.kill()  # right after a start committed
            else:
                time.sleep(rng.uniform(0.05, 0.6))  # mid-step or between steps
                proxy.kill()
            if round_no == 3:
                second.kill()
                second = ProxyProcess(crash_cluster.dsn(), log_path=log, extra_args=ARGS).start()
            proxy = ProxyProcess(crash_cluster.dsn(), log_path=log, extra_args=ARGS).start()
        statuses = _wait_all_done(crash_cluster, ids, timeout=120)
    finally:
        proxy.kill()
        second.kill()
    assert len(ids) >= 200
    assert set(statuses.values()) == {"completed"}, _failures(crash_cluster, ids)
    _assert_exactly_once(crash_cluster, ids)
    assert "event=task_recovered" in log.read_text(), "no kill landed mid-step"


def test_postgres_crash_restart_mid_run(crash_cluster: Cluster, tmp_path: Path) -> None:
    log = tmp_path / "pgdurable.log"
    proxy = ProxyProcess(crash_cluster.dsn(), log_path=log, extra_args=ARGS).start()
    _grant(crash_cluster)
    try:
        ids = _start(crash_cluster.dsn(), 40)
        time.sleep(0.3)
        crash_cluster.restart("immediate")
        ids += _start(crash_cluster.dsn(), 10)
        statuses = _wait_all_done(crash_cluster, ids, timeout=120)
    finally:
        proxy.kill()
    assert set(statuses.values()) == {"completed"}, _failures(crash_cluster, ids)
    _assert_exactly_once(crash_cluster, ids)
