"""Compensation (pg_durable's proposal): `forward <-> undo` and df.with_undo(forward, undo).

When the workflow fails, the undos of the forwards that completed run, latest completion
first, with the named results the forwards produced; the instance then ends `compensated`,
or `failed` naming the undo that failed and carrying both errors."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.acceptance.test_retries import effects, make_counter
from tests.support.workflows import await_status, start_and_await

SAGA = (
    "'INSERT INTO {t} VALUES (1) RETURNING v' <-> 'DELETE FROM {t} WHERE v = $a.v' |=> 'a'"
    " ~> ('INSERT INTO {t} VALUES (2)' <-> {undo2})"
    " ~> ('INSERT INTO {t} VALUES (3)' <-> 'DELETE FROM {t} WHERE v = 3')"
)


def saga_table(dsn: str) -> str:
    """A fresh table that takes 1 and 2 but not 3, and a log of the undos run."""
    name = f"saga_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (v int CHECK (v < 3))")
        conn.execute(f"CREATE TABLE {name}_log (n serial, v int)")
    return name


def undo_sql(table: str, v: int) -> str:
    """An undo that deletes row v and logs that it ran."""
    return (
        f"WITH d AS (DELETE FROM {table} WHERE v = {v} RETURNING v)"
        f" INSERT INTO {table}_log (v) SELECT v FROM d"
    )


def rows(dsn: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_failed_saga_undoes_its_completed_steps_in_reverse_order(wf_dsn: str) -> None:
    table = saga_table(wf_dsn)
    graph = SAGA.format(t=table, undo2="%s").replace(f"'DELETE FROM {table} WHERE v = $a.v'", "%s")
    instance, status = start_and_await(
        wf_dsn, graph, undo_sql(table, 1).replace("v = 1", "v = $a.v"), undo_sql(table, 2)
    )
    assert status == "compensated"
    assert rows(wf_dsn, f"SELECT v FROM {table}") == []
    assert rows(wf_dsn, f"SELECT v FROM {table}_log ORDER BY n") == [(2,), (1,)]
    ((info_status, output),) = rows(
        wf_dsn, "SELECT status, output FROM df.instance_info(%s)", instance
    )
    assert info_status == "compensated"
    assert "violates check constraint" in str(output)
    assert rows(wf_dsn, "SELECT df.status(%s)", instance) == [("compensated",)]
    ((explained,),) = rows(wf_dsn, "SELECT df.explain(%s)", instance)
    assert "\nStatus:   ↶ Compensated\nOutput:   " in str(explained)
    listed = rows(wf_dsn, "SELECT instance_id FROM df.list_instances('compensated', 1000)")
    assert (instance,) in listed
    # the failed forward's undo never ran: only completed forwards are undone
    undos = rows(
        wf_dsn,
        "SELECT n.status FROM df.nodes n JOIN df.nodes c ON c.instance_id = n.instance_id"
        " AND c.right_node = n.id WHERE n.instance_id = %s AND c.node_type = 'COMPENSATED'"
        " ORDER BY n.query",
        instance,
    )
    assert sorted(s for (s,) in undos) == ["completed", "completed", "pending"]


def test_a_failing_undo_fails_the_instance_with_both_errors(wf_dsn: str) -> None:
    table = saga_table(wf_dsn)
    graph = (
        f"df.with_undo('INSERT INTO {table} VALUES (1)', 'DELETE FROM nosuchtable_{table}')"
        f" ~> df.with_undo('INSERT INTO {table} VALUES (2)', %s)"
        f" ~> 'INSERT INTO {table} VALUES (3)'"
    )
    instance, status = start_and_await(wf_dsn, graph, undo_sql(table, 2))
    assert status == "failed"
    ((output,),) = rows(wf_dsn, "SELECT output FROM df.instance_info(%s)", instance)
    ((undo_id,),) = rows(
        wf_dsn,
        "SELECT n.id FROM df.nodes n WHERE n.instance_id = %s AND n.query LIKE 'DELETE%%'",
        instance,
    )
    assert str(output).startswith(f"compensation failed: undo node {undo_id} failed: ")
    assert f'relation "nosuchtable_{table}" does not exist' in str(output)
    assert "original error: " in str(output) and "violates check constraint" in str(output)
    assert rows(wf_dsn, f"SELECT v FROM {table}") == [(1,)]  # undo 2 ran, undo 1 failed
    ((node_error,),) = rows(
        wf_dsn,
        "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s AND id = %s",
        instance,
        undo_id,
    )
    assert "nosuchtable" in str(node_error)


def test_a_completed_saga_runs_no_undo(wf_dsn: str) -> None:
    table = saga_table(wf_dsn)
    graph = f"'INSERT INTO {table} VALUES (1)' <-> 'DELETE FROM {table}' |=> 'one'"
    instance, status = start_and_await(wf_dsn, graph)
    assert status == "completed"
    assert rows(wf_dsn, f"SELECT v FROM {table}") == [(1,)]
    assert await_status(wf_dsn, instance) == "completed"


def explain_first_line(dsn: str, expression: str) -> str:
    ((text,),) = rows(dsn, f"SELECT df.explain({expression})")
    return str(text).splitlines()[0]


def test_the_operators_group_left_to_right_at_one_level(wf_dsn: str) -> None:
    """`a ~> b <-> c` is `(a ~> b) <-> c`: the undo covers the whole sequence."""
    assert "WITH UNDO" in explain_first_line(wf_dsn, "'SELECT 1' ~> 'SELECT 2' <-> 'SELECT 3'")
    plain = explain_first_line(wf_dsn, "'SELECT 1' ~> ('SELECT 2' <-> 'SELECT 3')")
    assert "WITH UNDO" not in plain and "SELECT 1" in plain
    named = explain_first_line(wf_dsn, "'SELECT 1' <-> 'SELECT 2' |=> 'x'")
    assert "WITH UNDO |=> 'x'" in named
    joined = explain_first_line(wf_dsn, "'SELECT 1' <-> 'SELECT 2' & 'SELECT 3'")
    assert "JOIN" in joined
    ((tree,),) = rows(wf_dsn, "SELECT df.explain('SELECT 1' <-> 'SELECT 2')")
    assert "→ forward:" in str(tree) and "↶ undo:" in str(tree) and "SQL: SELECT 2" in str(tree)
    ((same,),) = rows(wf_dsn, "SELECT df.explain(df.with_undo('SELECT 1', 'SELECT 2'))")
    assert same == tree


def test_an_undo_follows_the_retry_policy(wf_dsn: str) -> None:
    table = saga_table(wf_dsn)
    counter = make_counter(wf_dsn)
    graph = (
        f"('INSERT INTO {table} VALUES (1)' <-> df.retry(%s, 2, '0.05 s', '0.1 s'))"
        f" ~> 'INSERT INTO {table} VALUES (3)'"
    )
    instance, status = start_and_await(wf_dsn, graph, counter.step(1, tag="undo"))
    assert status == "compensated"
    assert counter.attempts() == 2
    assert effects(wf_dsn, instance) == ["undo"]


def test_a_broken_step_in_either_operand_fails_df_start(wf_dsn: str) -> None:
    """The relay checks the SQL of both operands of <-> (and of df.with_undo) at df.start."""
    for graph in ("'SELECT 1' <-> 'SELEC 2'", "df.with_undo('SELEC 1', 'SELECT 2')"):
        with psycopg.connect(wf_dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.SyntaxError, match="SELEC"):
                conn.execute(f"SELECT df.start({graph})")


def test_a_running_undo_shows_running_not_skipped(wf_dsn: str) -> None:
    table = saga_table(wf_dsn)
    graph = (
        f"('INSERT INTO {table} VALUES (1)' <-> 'SELECT pg_sleep(0.6)')"
        f" ~> 'INSERT INTO {table} VALUES (3)'"
    )
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph})").fetchone()
        assert row is not None
        instance = str(row[0])
        inferred = (
            "SELECT inferred_status FROM df.instance_nodes(%s) WHERE query LIKE 'SELECT pg_s%%'"
        )
        deadline = time.monotonic() + 5
        seen = None
        while time.monotonic() < deadline and seen != "running":
            seen = conn.execute(inferred, (instance,)).fetchone()[0]  # type: ignore[index]
            time.sleep(0.02)
        assert seen == "running"
    assert await_status(wf_dsn, instance) == "compensated"
    assert rows(wf_dsn, inferred, instance) == [("completed",)]
