"""Execution scopes in df.instance_nodes and loops that go on after a failed iteration
(pg_durable 0.2.8, §5.4, §6.7)."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

LOSING_LOOP = "Loop branch cancelled after losing RACE"


def _start(conn: psycopg.Connection, graph_sql: str) -> str:
    row = conn.execute(f"SELECT df.start({graph_sql})").fetchone()
    assert row is not None
    return str(row[0])


def _await_all(conn: psycopg.Connection, instances: Iterable[str]) -> list[str]:
    statuses = []
    for instance in instances:
        row = conn.execute("SELECT df.await_instance(%s, 20)", (instance,)).fetchone()
        assert row is not None
        statuses.append(str(row[0]))
    return statuses


def _nodes(conn: psycopg.Connection, instance: str) -> dict[str, dict[str, str | None]]:
    """Each node of the instance by its query; a compound node by its type, a LOOP by
    "LOOP " and its body's key."""
    rows = conn.execute(
        "SELECT node_id, node_type, query, left_node, right_node, status, result, "
        "status_details::jsonb ->> 'execution_id', inferred_status "
        "FROM df.instance_nodes(%s)",
        (instance,),
    ).fetchall()
    keys = ("id", "type", "query", "left", "right", "status", "result", "stamp", "inferred")
    nodes = [dict(zip(keys, row, strict=True)) for row in rows]
    by_id = {n["id"]: n for n in nodes}

    def key(node: dict[str, str | None]) -> str:
        if node["type"] == "SQL":
            return str(node["query"])
        if node["type"] == "LOOP":
            return "LOOP " + key(by_id[node["left"]])
        return str(node["type"])

    return {key(n): n for n in nodes}


def test_branches_and_non_root_loops_are_stamped_with_their_own_scopes(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS scopes_m (n int)")
        conn.execute("TRUNCATE scopes_m")
        # a non-root loop (2 iterations) whose body is a JOIN with a loop as a branch
        # (2 iterations in each of the outer loop's)
        nested = _start(
            conn,
            "'SELECT 0' ~> df.loop(('SELECT 1 AS x' & df.loop("
            "'INSERT INTO scopes_m VALUES (1)', 'SELECT count(*) % 2 = 1 FROM scopes_m')), "
            "'SELECT count(*) < 4 FROM scopes_m')",
        )
        raced = _start(conn, "(df.loop('SELECT 1') | 'SELECT pg_sleep(0.3)') ~> 'SELECT 2'")
        assert _await_all(conn, [nested, raced]) == ["completed", "completed"]

        nodes = _nodes(conn, nested)
        outer, inner = nodes["LOOP JOIN"], nodes["LOOP INSERT INTO scopes_m VALUES (1)"]
        root = f"{nested}::1"
        outer_scope = f"{root}::{outer['id']}::2"
        assert nodes["THEN"]["stamp"] == nodes["SELECT 0"]["stamp"] == outer["stamp"] == root
        assert nodes["JOIN"]["stamp"] == outer_scope
        assert nodes["SELECT count(*) < 4 FROM scopes_m"]["stamp"] == outer_scope
        assert (
            nodes["SELECT 1 AS x"]["stamp"] == f"{outer_scope}::{nodes['SELECT 1 AS x']['id']}::1"
        )
        branch_loop = f"{outer_scope}::{inner['id']}::2"  # counted again in generation 2
        assert inner["stamp"] == nodes["INSERT INTO scopes_m VALUES (1)"]["stamp"] == branch_loop
        assert nodes["SELECT count(*) % 2 = 1 FROM scopes_m"]["stamp"] == branch_loop
        assert all(n["inferred"] == n["status"] == "completed" for n in nodes.values()), nodes

        nodes = _nodes(conn, raced)
        loop = nodes["LOOP SELECT 1"]
        assert (loop["status"], loop["inferred"], loop["result"]) == (
            "failed",
            "failed",
            f'"{LOSING_LOOP}"',
        )
        assert loop["stamp"] == nodes["SELECT 1"]["stamp"] == f"{raced}::1::{loop['id']}::1"
        winner = nodes["SELECT pg_sleep(0.3)"]
        assert winner["stamp"] == f"{raced}::1::{winner['id']}::1"
        assert nodes["RACE"]["stamp"] == nodes["SELECT 2"]["stamp"] == f"{raced}::1"


def test_a_loop_continuing_on_failure_goes_on_and_its_condition_stays_fatal(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS scopes_cof (n int)")
        conn.execute("TRUNCATE scopes_cof")
        # both iterations fail; the loop goes on to its second and ends by its condition
        going_on = _start(
            conn,
            "df.loop('INSERT INTO scopes_cof VALUES (1)' ~> 'SELECT 1/0', "
            "'SELECT count(*) < 2 FROM scopes_cof WHERE n = 1', continue_on_failure => true)",
        )
        fatal = _start(conn, "df.loop('SELECT 1', 'SELECT 1/0', true)")
        stopped = _start(conn, "df.loop('INSERT INTO scopes_cof VALUES (2)' ~> 'SELECT 1/0')")
        assert _await_all(conn, [going_on, fatal, stopped]) == ["completed", "failed", "failed"]
        counts = dict(conn.execute("SELECT n, count(*) FROM scopes_cof GROUP BY n").fetchall())
        assert counts == {1: 2, 2: 1}  # without the flag the first failure ends the loop

        nodes = _nodes(conn, going_on)
        failed = nodes["SELECT 1/0"]
        assert (failed["status"], failed["inferred"]) == ("failed", "failed")
        assert "division by zero" in str(failed["result"])
        body = nodes["THEN"]
        assert body["status"] == "failed" and body["stamp"] == f"{going_on}::2::{body['id']}::1"
        loop = nodes["LOOP THEN"]
        assert (loop["status"], loop["result"], loop["stamp"]) == (
            "completed",
            "null",
            f"{going_on}::2",
        )
        assert conn.execute("SELECT df.result(%s)", (going_on,)).fetchone() == ("null",)

        row = conn.execute("SELECT output FROM df.instance_info(%s)", (fatal,)).fetchone()
        assert row is not None and "division by zero" in row[0]
        assert _nodes(conn, fatal)["LOOP SELECT 1"]["status"] == "failed"

        explained = conn.execute(
            "SELECT df.explain(%s)", ("df.loop('SELECT 1', NULL, continue_on_failure => true)",)
        ).fetchone()
        assert explained is not None and "LOOP (infinite, continue on failure)" in explained[0]
        explained = conn.execute("SELECT df.explain(%s)", (going_on,)).fetchone()
        assert explained is not None and "LOOP (while, continue on failure) ✓" in explained[0]
