"""A step's result is capped by --max-result-bytes (PGDURABLE_MAX_RESULT_BYTES) and read in
chunks: a step over the cap fails with a message naming it, and pgdurable's memory stays
near the cap whatever the step returns."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engine.executors.results import rows_document
from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import FLAVORS, make_cluster, remove_cluster
from tests.support.proxy import ProxyProcess
from tests.support.workflows import start_and_await

LIMIT = 1024 * 1024
MESSAGE = f"SQL step result is larger than the limit of {LIMIT} bytes (--max-result-bytes)"


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, ProxyProcess]]:
    """A private cluster and a pgdurable whose results are capped at LIMIT (through the
    environment variable, so that a pgdurable without the flag starts too)."""
    root = tmp_path_factory.mktemp("results")
    cluster = make_cluster(FLAVORS[0], root)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE big LOGIN")
    previous = os.environ.get("PGDURABLE_MAX_RESULT_BYTES")
    os.environ["PGDURABLE_MAX_RESULT_BYTES"] = str(LIMIT)
    try:
        proxy = ProxyProcess(cluster.dsn(), log_path=root / "pgdurable.log").start()
    finally:
        if previous is None:
            del os.environ["PGDURABLE_MAX_RESULT_BYTES"]
        else:
            os.environ["PGDURABLE_MAX_RESULT_BYTES"] = previous
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage('big')")
    yield cluster, proxy
    proxy.stop()
    remove_cluster(cluster)


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _node_error(dsn: str, instance: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s AND status = 'failed'",
            (instance,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_result_over_the_limit_fails_the_step_naming_the_limit(
    capped: tuple[Cluster, ProxyProcess],
) -> None:
    cluster, _ = capped
    graph = "'SELECT g, repeat(''x'', 100) AS pad FROM generate_series(1, 20000) g'"  # 2.2 MB
    instance, status = start_and_await(cluster.dsn("big"), graph)
    assert status == "failed"
    assert _node_error(cluster.dsn("big"), instance) == MESSAGE


def test_memory_stays_bounded_by_the_limit_not_the_result(
    capped: tuple[Cluster, ProxyProcess],
) -> None:
    cluster, proxy = capped
    assert proxy.process is not None
    pid = proxy.process.pid
    before = _memory(pid)
    # 300 MB of rows, then a single 300 MB value: neither is held
    for graph in (
        "'SELECT g, repeat(''x'', 1000) AS pad FROM generate_series(1, 300000) g'",
        "'SELECT repeat(''y'', 300000000) AS one'",
    ):
        instance, status = start_and_await(cluster.dsn("big"), graph, timeout=120)
        assert status == "failed"
        assert _node_error(cluster.dsn("big"), instance) == MESSAGE
    after = _memory(pid)
    grown = after["VmHWM"] - before["VmHWM"]
    assert grown < 48 * 1024 * 1024, f"peak grew by {grown / 2**20:.0f} MiB: {before} {after}"


def test_a_large_allowed_result_is_read_in_chunks_whole_and_in_order(
    capped: tuple[Cluster, ProxyProcess],
) -> None:
    cluster, _ = capped
    graph = "'SELECT g, md5(g::text) AS h FROM generate_series(1, 15000) g'"  # 0.8 MB
    instance, status = start_and_await(cluster.dsn("big"), graph)
    assert status == "completed"
    with psycopg.connect(cluster.dsn()) as conn:
        row = conn.execute(
            "SELECT result -> 'row_count', result -> 'rows' -> 14999, "
            "(SELECT count(DISTINCT (r ->> 'g')) FROM jsonb_array_elements(result -> 'rows') r) "
            "FROM df.nodes WHERE instance_id = %s AND node_type = 'SQL'",
            (instance,),
        ).fetchone()
    assert row == (15000, {"g": 15000, "h": "3f74a886c7f841699690962c497d4f30"}, 15000)


BIG_STEP = "SELECT md5(g::text) AS hash, g AS n FROM generate_series(1, 15000) g"


def _big_rows_text() -> str:
    """BIG_STEP's result as the step writes it (keys in column order)."""
    return rows_document(
        [("hash", "text"), ("n", "int4")],
        [(hashlib.md5(str(g).encode()).hexdigest(), g) for g in range(1, 15001)],
    )


def test_a_large_result_is_stored_once_and_read_back_in_column_order(
    capped: tuple[Cluster, ProxyProcess],
) -> None:
    cluster, _ = capped
    # jsonb orders keys n before hash; the step's text, and $big (its first column), do not
    big = BIG_STEP
    graph = f"$${big}$$ |=> 'big' ~> 'SELECT $big AS first'"
    instance, status = start_and_await(cluster.dsn("big"), graph)
    assert status == "completed"
    expected = _big_rows_text()
    with psycopg.connect(cluster.dsn()) as conn:
        stored = conn.execute(
            "SELECT n.node_type, n.result IS NOT NULL, s.raw_result IS NULL, s.result_columns "
            "FROM df.nodes n JOIN df._node_state s ON s.instance_id = n.instance_id "
            "AND s.node_id = n.id WHERE n.instance_id = %s AND n.query = %s",
            (instance, big),
        ).fetchone()
        raws = conn.execute(
            "SELECT node ->> 'raw' FROM jsonb_array_elements(df._instance_state(%s) -> 'nodes') "
            "node WHERE node ->> 'query' = %s",
            (instance, big),
        ).fetchone()
        last = conn.execute("SELECT df.result(%s)::jsonb", (instance,)).fetchone()
    assert stored == ("SQL", True, True, ["hash", "n"])  # the jsonb and two column names
    assert raws == (expected,)  # what the engine loads: the step's text, rebuilt exactly
    assert last == ({"rows": [{"first": hashlib.md5(b"1").hexdigest()}], "row_count": 1},)


def test_a_large_output_is_stored_once_and_read_back_whole(
    capped: tuple[Cluster, ProxyProcess],
) -> None:
    cluster, _ = capped
    big = BIG_STEP
    instance, status = start_and_await(cluster.dsn("big"), f"$${big}$$")
    assert status == "completed"
    expected = _big_rows_text()
    with psycopg.connect(cluster.dsn()) as conn:
        stored = conn.execute(
            "SELECT e.output IS NULL, e.output_columns, s.raw_result IS NULL "
            "FROM df._executions e JOIN df.instances i ON i.id = e.instance_id "
            "JOIN df._node_state s ON s.instance_id = i.id AND s.node_id = i.root_node "
            "WHERE e.instance_id = %s",
            (instance,),
        ).fetchone()
    assert stored == (True, ["hash", "n"], True)  # df.nodes.result is the one copy
    with psycopg.connect(cluster.dsn("big")) as conn:  # the readers, as the owner
        info = conn.execute("SELECT output FROM df.instance_info(%s)", (instance,)).fetchone()
        runs = conn.execute("SELECT output FROM df.instance_executions(%s)", (instance,)).fetchall()
        listed = conn.execute(
            "SELECT output FROM df.list_instances(NULL, 100) WHERE instance_id = %s", (instance,)
        ).fetchone()
        explained = conn.execute("SELECT df.explain(%s)", (instance,)).fetchone()
    assert info == (expected,) and runs == [(expected,)] and listed == (expected,)
    assert explained is not None and f"Output:   {expected[:57]}..." in explained[0]


def test_a_large_result_jsonb_would_print_differently_keeps_its_text(
    capped: tuple[Cluster, ProxyProcess],
) -> None:
    cluster, _ = capped
    # nested objects: jsonb prints them with spaces, and '},{"' inside the first row
    big = (
        "SELECT g AS n, jsonb_build_array(jsonb_build_object('a', g), jsonb_build_object('b', g))"
        " AS j FROM generate_series(1, 5000) g"
    )
    instance, status = start_and_await(cluster.dsn("big"), f"$${big}$$")
    assert status == "completed"
    expected = rows_document(
        [("n", "int4"), ("j", "jsonb")],
        [(g, f'[{{"a": {g}}}, {{"b": {g}}}]') for g in range(1, 5001)],
    )
    with psycopg.connect(cluster.dsn()) as conn:
        stored = conn.execute(
            "SELECT s.raw_result = %s, s.result_columns FROM df.nodes n JOIN df._node_state s "
            "ON s.instance_id = n.instance_id AND s.node_id = n.id WHERE n.instance_id = %s",
            (expected, instance),
        ).fetchone()
    assert stored == (True, None)
