"""JOIN, RACE, IF, LOOP/BREAK and SLEEP against pg_durable's documented behaviour (§6)."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster


def _run(dsn: str, graph_sql: str, timeout: int = 30) -> tuple[str, str, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        instance = conn.execute(f"SELECT df.start({graph_sql})").fetchone()[0]  # type: ignore[index]
        status = conn.execute("SELECT df.await_instance(%s, %s)", (instance, timeout)).fetchone()
        assert status is not None
        return str(instance), str(status[0]), time.monotonic() - started


def _why(dsn: str, instance: str) -> str:
    """The nodes' statuses and results, for assertion messages."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT node_type, status, result::text FROM df.nodes WHERE instance_id = %s",
            (instance,),
        ).fetchall()
    return "\n".join(map(str, rows))


def _result(dsn: str, instance: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT df.result(%s)", (instance,)).fetchone()
        return json.loads(row[0]) if row and row[0] is not None else None


def _nodes(dsn: str, instance: str) -> list[tuple[str, str, str, str | None]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT node_type, status, inferred_status, query FROM df.instance_nodes(%s) "
            "ORDER BY node_type, query",
            (instance,),
        ).fetchall()  # type: ignore[return-value]


def test_join_result_is_the_array_and_branches_overlap(wf_dsn: str) -> None:
    graph = "('SELECT pg_sleep(1), 1 AS a') & ('SELECT pg_sleep(1), 2 AS b')"
    instance, status, elapsed = _run(wf_dsn, graph)
    assert status == "completed", _why(wf_dsn, instance)
    assert elapsed < 1.9  # concurrent, not 2 s
    with psycopg.connect(wf_dsn) as conn:
        recorded = conn.execute(
            "SELECT extract(epoch FROM completed_at - created_at) FROM df.instances WHERE id = %s",
            (instance,),
        ).fetchone()
    assert recorded is not None and recorded[0] >= 1.0  # stamped when it ended, not began
    assert _result(wf_dsn, instance) == [
        {"rows": [{"pg_sleep": None, "a": 1}], "row_count": 1},
        {"rows": [{"pg_sleep": None, "b": 2}], "row_count": 1},
    ]


def test_join3_and_nested_join_shapes(wf_dsn: str) -> None:
    instance, status, _ = _run(
        wf_dsn, "df.join3('SELECT 1 AS x', 'SELECT 2 AS x', 'SELECT 3 AS x')"
    )
    assert status == "completed"
    result = _result(wf_dsn, instance)
    assert isinstance(result, list) and [r["rows"][0]["x"] for r in result] == [1, 2, 3]
    instance, status, _ = _run(wf_dsn, "('SELECT 1 AS x' & 'SELECT 2 AS x') & 'SELECT 3 AS x'")
    nested = _result(wf_dsn, instance)
    assert isinstance(nested, list) and isinstance(nested[0], list) and len(nested) == 2


def test_join_branch_failure(wf_dsn: str) -> None:
    instance, status, _ = _run(wf_dsn, "'SELECT 1' & 'SELECT 1/0'")
    assert status == "failed"
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s AND node_type = 'JOIN'",
            (instance,),
        ).fetchone()
    assert row is not None and row[0].startswith("JOIN branch 2 failed: SQL execution failed")


def test_race_winner_and_loser_query_cancelled(wf_dsn: str, cluster: Cluster) -> None:
    graph = "'SELECT ''fast'' AS w' | 'SELECT pg_sleep(60), ''slow'' AS w'"
    instance, status, elapsed = _run(wf_dsn, graph)
    assert status == "completed" and elapsed < 10
    assert _result(wf_dsn, instance) == {"rows": [{"w": "fast"}], "row_count": 1}
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE 'SELECT pg_sleep(60), %%' AND state = 'active'"
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the losing query is still running"
            time.sleep(0.1)
    inferred = {(q or "")[:20]: s for _, _, s, q in _nodes(wf_dsn, instance)}
    assert inferred["SELECT pg_sleep(60),"] == "skipped"


def test_if_truthiness_and_skipped_branch(wf_dsn: str) -> None:
    cases = {"'0.00'": "e", "'off'": "t", "'yes'": "t", "''": "e", "NULL": "e", "2": "t"}
    for condition, expected in cases.items():
        graph = (
            f"('SELECT {condition.replace(chr(39), chr(39) * 2)} AS c' ?> 'SELECT ''t'' AS r') "
            "!> 'SELECT ''e'' AS r'"
        )
        instance, status, _ = _run(wf_dsn, graph)
        assert status == "completed", condition
        assert _result(wf_dsn, instance) == {"rows": [{"r": expected}], "row_count": 1}, condition
    nodes = _nodes(wf_dsn, instance)
    assert ("SQL", "pending", "skipped", "SELECT 'e' AS r") in nodes


def test_if_rows(wf_dsn: str) -> None:
    graph = (
        "'SELECT 1 WHERE false' |=> 'none' ~> "
        "df.if_rows('none', 'SELECT ''has rows'' AS r', 'SELECT ''empty'' AS r')"
    )
    instance, status, _ = _run(wf_dsn, graph)
    assert status == "completed"
    assert _result(wf_dsn, instance) == {"rows": [{"r": "empty"}], "row_count": 1}


def test_loop_with_condition_and_break_value(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS loop_t (n int)")
        conn.execute("TRUNCATE loop_t")
    graph = "df.loop('INSERT INTO loop_t VALUES (1)', 'SELECT count(*) < 3 FROM loop_t')"
    instance, status, elapsed = _run(wf_dsn, graph)
    assert status == "completed"
    assert elapsed >= 2.0  # three iterations, each padded to 1 s as pg_durable does
    with psycopg.connect(wf_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM loop_t").fetchone() == (3,)
    graph = (
        "@> ('INSERT INTO loop_t VALUES (2)' ~> "
        "(('SELECT count(*) >= 5 FROM loop_t' ?> df.break('{\"done\": true}')) "
        "!> 'SELECT 0'))"
    )
    instance, status, _ = _run(wf_dsn, graph)
    assert status == "completed"
    assert _result(wf_dsn, instance) == {"done": True}


def test_break_outside_loop_fails(wf_dsn: str) -> None:
    instance, status, _ = _run(wf_dsn, "'SELECT 1' ~> df.break()")
    assert status == "failed"
    with psycopg.connect(wf_dsn) as conn:
        out = conn.execute("SELECT output FROM df.instance_info(%s)", (instance,)).fetchone()
    assert out is not None and "df.break() was called outside of a loop" in out[0]


def test_sleep(wf_dsn: str) -> None:
    instance, status, elapsed = _run(wf_dsn, "df.sleep(1) ~> 'SELECT 1 AS after'")
    assert status == "completed" and 1.0 <= elapsed < 4
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute(
            "SELECT result::text FROM df.nodes WHERE instance_id = %s AND node_type = 'SLEEP'",
            (instance,),
        ).fetchone()
    assert row == ('{"slept": true, "seconds": 1}',)


def test_signal_sent_before_the_wait_is_kept(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        instance = conn.execute(
            "SELECT df.start('SELECT pg_sleep(0.5)' ~> df.wait_for_signal('go') |=> 'sig' "
            "~> 'SELECT $sig.data AS payload')"
        ).fetchone()[0]  # type: ignore[index]
        assert conn.execute("SELECT df.signal(%s, 'go', '{\"k\": 1}')", (instance,)).fetchone() == (
            "OK",
        )
        assert conn.execute("SELECT df.await_instance(%s, 10)", (instance,)).fetchone() == (
            "completed",
        )
        rows = conn.execute(
            "SELECT result::text FROM df.nodes WHERE instance_id = %s AND node_type = 'SIGNAL'",
            (instance,),
        ).fetchone()
    assert rows == ('{"data": {"k": 1}, "timed_out": false, "signal_name": "go"}',)
    assert _result(wf_dsn, instance) == {"rows": [{"payload": '{"k":1}'}], "row_count": 1}


def test_signal_timeout_is_not_a_failure(wf_dsn: str) -> None:
    instance, status, elapsed = _run(wf_dsn, "df.wait_for_signal('never', 1)")
    assert status == "completed" and 1.0 <= elapsed < 5
    assert _result(wf_dsn, instance) == {"data": None, "timed_out": True, "signal_name": "never"}


def test_signal_to_an_invisible_instance_is_refused(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT df.signal('deadbeef', 'go')")
    assert "Instance not found or access denied: deadbeef" in str(info.value)


def test_wait_for_schedule_fires_on_the_minute(wf_dsn: str) -> None:
    from engine.planner.schedule import next_tick

    start = 1_718_452_805.0  # 2024-06-15 12:00:05 UTC, a Saturday
    assert next_tick("* * * * *", start) == 1_718_452_860.0
    assert next_tick("0 12 * * 1", start) == 1_718_539_200.0  # Sunday (1 = Sunday) 12:00
    assert next_tick("0 12 * * Mon", start) == 1_718_625_600.0
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        instance = conn.execute("SELECT df.start(df.wait_for_schedule('* * * * *'))").fetchone()
        assert instance is not None
        status = conn.execute(
            "SELECT status FROM df.nodes WHERE instance_id = %s", (instance[0],)
        ).fetchone()
        assert status in (("pending",), ("running",))
        conn.execute("SELECT df.cancel(%s)", (instance[0],))


def test_named_results_are_scoped_to_join_branches(wf_dsn: str) -> None:
    # each branch sees its own $x (not its sibling's); after the JOIN the later branch wins
    graph = (
        "(('SELECT 1 AS v' |=> 'x') ~> 'SELECT $x AS left_saw') & "
        "(('SELECT pg_sleep(0.3), 2 AS v' |=> 'x') ~> 'SELECT $x.v AS right_saw') "
        "~> 'SELECT $x.v AS after'"
    )
    instance, status, _ = _run(wf_dsn, graph)
    assert status == "completed", _why(wf_dsn, instance)
    with psycopg.connect(wf_dsn) as conn:
        rows = dict(
            conn.execute(
                "SELECT query, result -> 'rows' -> 0 FROM df.nodes WHERE instance_id = %s "
                "AND query LIKE 'SELECT $x%%'",
                (instance,),
            ).fetchall()
        )
    assert rows["SELECT $x AS left_saw"] == {"left_saw": 1}
    assert rows["SELECT $x.v AS right_saw"] == {"right_saw": 2}
    assert _result(wf_dsn, instance) == {"rows": [{"after": 2}], "row_count": 1}


def test_only_the_race_winner_names_are_merged(wf_dsn: str) -> None:
    race = "(('SELECT ''fast'' AS w' |=> 'won') | ('SELECT pg_sleep(5), ''slow'' AS w' |=> 'lost'))"
    instance, status, _ = _run(wf_dsn, f"{race} ~> 'SELECT $won.w AS winner'")
    assert status == "completed", _why(wf_dsn, instance)
    assert _result(wf_dsn, instance) == {"rows": [{"winner": "fast"}], "row_count": 1}
    instance, status, _ = _run(wf_dsn, f"{race} ~> 'SELECT $lost.w AS loser'")
    assert status == "failed"  # $lost is unknown after the RACE: left as text, PostgreSQL refuses
    assert "SQL execution failed" in _why(wf_dsn, instance)
