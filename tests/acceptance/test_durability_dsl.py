"""Timers, JOIN, RACE, LOOP and signals survive SIGKILL of pgdurable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import FLAVORS, make_cluster, remove_cluster
from tests.support.proxy import ProxyProcess

ARGS = ["--lease-seconds", "2", "--poll-interval", "0.2", "--min-loop-iteration-seconds", "0"]


@pytest.fixture(scope="module")
def dsl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("durability-dsl")
    cluster = make_cluster(FLAVORS[0], root)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE dsl_user LOGIN")
        conn.execute("CREATE TABLE effects (instance_id text, tag text)")
        conn.execute("GRANT INSERT, SELECT ON effects TO dsl_user")
    proxy = ProxyProcess(cluster.dsn(), extra_args=ARGS).start()
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage('dsl_user')")
    proxy.kill()
    yield cluster
    remove_cluster(cluster)


def _start(cluster: Cluster, graph: str) -> str:
    with psycopg.connect(cluster.dsn("dsl_user"), autocommit=True) as conn:
        return str(conn.execute(f"SELECT df.start({graph})").fetchone()[0])  # type: ignore[index]


def _await(cluster: Cluster, instance: str, timeout: int = 60) -> str:
    with psycopg.connect(cluster.dsn("dsl_user"), autocommit=True) as conn:
        row = conn.execute("SELECT df.await_instance(%s, %s)", (instance, timeout)).fetchone()
        return str(row[0])  # type: ignore[index]


def _effects(cluster: Cluster, instance: str) -> list[str]:
    with psycopg.connect(cluster.dsn()) as conn:
        rows = conn.execute(
            "SELECT tag FROM effects WHERE instance_id = %s ORDER BY tag", (instance,)
        ).fetchall()
    return [r[0] for r in rows]


def _effect(tag: str, sleep: float = 0) -> str:
    """A step that records `tag` once it ran (after sleeping `sleep` seconds)."""
    return f"$$INSERT INTO effects SELECT '{{sys_instance_id}}', '{tag}' FROM pg_sleep({sleep})$$"


def test_sleep_keeps_its_deadline_across_a_kill(dsl_cluster: Cluster, tmp_path: Path) -> None:
    proxy = ProxyProcess(dsl_cluster.dsn(), extra_args=ARGS).start()
    started = time.monotonic()
    instance = _start(dsl_cluster, "df.sleep(10) ~> 'SELECT 1'")
    time.sleep(3 - (time.monotonic() - started))
    proxy.kill()
    time.sleep(5 - (time.monotonic() - started))
    proxy = ProxyProcess(dsl_cluster.dsn(), extra_args=ARGS).start()
    try:
        assert _await(dsl_cluster, instance, 30) == "completed"
        elapsed = time.monotonic() - started
    finally:
        proxy.kill()
    assert 9.5 <= elapsed < 12.5, elapsed  # about 10 s from the start, not 13


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (f"({_effect('a', 1)} & {_effect('b', 2)}) ~> {_effect('c')}", ["a", "b", "c"]),
        (
            f"({_effect('fast', 1)} | {_effect('slow', 30)}) ~> {_effect('after')}",
            ["after", "fast"],
        ),
        (
            f"df.loop({_effect('it', 0.3)}, "
            "'SELECT count(*) < 4 FROM effects WHERE instance_id = ''{sys_instance_id}''') "
            f"~> {_effect('done')}",
            ["done", "it", "it", "it", "it"],
        ),
    ],
    ids=["join", "race", "loop"],
)
def test_killed_mid_flight_finishes_exactly_once(
    dsl_cluster: Cluster, graph: str, expected: list[str]
) -> None:
    proxy = ProxyProcess(dsl_cluster.dsn(), extra_args=ARGS).start()
    instance = _start(dsl_cluster, graph)
    time.sleep(0.6)
    proxy.kill()
    proxy = ProxyProcess(dsl_cluster.dsn(), extra_args=ARGS).start()
    try:
        assert _await(dsl_cluster, instance, 60) == "completed"
    finally:
        proxy.kill()
    assert _effects(dsl_cluster, instance) == expected


def test_signal_sent_while_pgdurable_is_down(dsl_cluster: Cluster) -> None:
    proxy = ProxyProcess(dsl_cluster.dsn(), extra_args=ARGS).start()
    instance = _start(dsl_cluster, f"df.wait_for_signal('approve') ~> {_effect('approved')}")
    time.sleep(0.5)
    proxy.kill()
    with psycopg.connect(dsl_cluster.dsn("dsl_user"), autocommit=True) as conn:
        conn.execute("SELECT df.signal(%s, 'approve', 'yes')", (instance,))
    proxy = ProxyProcess(dsl_cluster.dsn(), extra_args=ARGS).start()
    try:
        assert _await(dsl_cluster, instance, 30) == "completed"
    finally:
        proxy.kill()
    assert _effects(dsl_cluster, instance) == ["approved"]


def test_loop_storage_does_not_grow(dsl_cluster: Cluster) -> None:
    proxy = ProxyProcess(dsl_cluster.dsn(), extra_args=ARGS).start()
    try:
        instance = _start(
            dsl_cluster,
            "df.loop('SELECT 1 AS one' ~> 'SELECT 2 AS two', 'SELECT true') | df.sleep(6)",
        )
        assert _await(dsl_cluster, instance, 30) == "completed"
    finally:
        proxy.kill()
    with psycopg.connect(dsl_cluster.dsn()) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM df.nodes WHERE instance_id = %(i)s), "
            "(SELECT count(*) FROM df._node_state WHERE instance_id = %(i)s), "
            "(SELECT iteration FROM df._node_state s JOIN df.nodes n ON n.instance_id = "
            "s.instance_id AND n.id = s.node_id WHERE n.instance_id = %(i)s "
            "AND n.node_type = 'LOOP')",
            {"i": instance},
        ).fetchone()
    assert counts is not None
    nodes, states, iterations = counts
    assert iterations > 50, iterations  # many iterations ran in 6 s with pacing off
    assert nodes == 7 and states <= nodes  # rows are reused, never added per iteration
