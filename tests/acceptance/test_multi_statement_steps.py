"""SQL steps of several statements run, the last one's rows being the step's result (as
pg_durable): all of them in the step's one transaction, with the record of its result."""

from __future__ import annotations

import json

import psycopg

from tests.support.workflows import start_and_await


def _nodes(dsn: str, instance: str) -> list[tuple[str, object, object]]:
    """(query, result, status_details) of each SQL node of an instance."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT query, result::jsonb, status_details FROM df.instance_nodes(%s)"
            " WHERE node_type = 'SQL' ORDER BY updated_at",
            (instance,),
        ).fetchall()
    return [(str(q), r, d) for q, r, d in rows]


def _table(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE TABLE {name} (v int)")


def test_the_last_statements_rows_are_the_result_first_step_and_later(wf_dsn: str) -> None:
    """As a new instance's first step (run with its first advance) and as a later step,
    with a named result of the last statement used by the next step."""
    steps = (
        "'CREATE TEMP TABLE five AS SELECT 5 AS v; SELECT v, ''a;b'' AS s FROM five;'"
        " |=> 'r' ~> 'SELECT 1 AS one; SELECT $r.v + 1 AS w -- done'"
    )
    instance, status = start_and_await(wf_dsn, steps)
    assert status == "completed"
    results = [result for _, result, _ in _nodes(wf_dsn, instance)]
    assert results == [
        {"rows": [{"v": 5, "s": "a;b"}], "row_count": 1},
        {"rows": [{"w": 6}], "row_count": 1},
    ]


def test_all_statements_commit_with_the_steps_record_or_not_at_all(wf_dsn: str) -> None:
    _table(wf_dsn, "multi_t")
    steps = (
        "'SELECT 1' ~> 'INSERT INTO multi_t VALUES (1); INSERT INTO multi_t VALUES (2)"
        " RETURNING v, pg_current_xact_id()::text AS xact'"
    )
    instance, status = start_and_await(wf_dsn, steps)
    assert status == "completed"
    with psycopg.connect(wf_dsn) as conn:
        written = conn.execute("SELECT v, xmin::text FROM multi_t ORDER BY v").fetchall()
        recorded = conn.execute(
            "SELECT n.xmin::text FROM df.nodes n WHERE n.instance_id = %s"
            " AND n.query LIKE 'INSERT%%'",
            (instance,),
        ).fetchone()
    (_, result, details) = _nodes(wf_dsn, instance)[-1]
    assert isinstance(result, dict)
    xact = result["rows"][0]["xact"]
    # both rows and the step's record: one transaction, so exactly once
    assert written == [(1, xact), (2, xact)] and recorded == (xact,)
    assert "at-least-once" not in json.dumps(details)

    instance, status = start_and_await(wf_dsn, "'INSERT INTO multi_t VALUES (3); SELECT 1 / 0'")
    assert status == "failed"
    with psycopg.connect(wf_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM multi_t").fetchone() == (2,)
        error = conn.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s", (instance,)
        ).fetchone()
    assert error == ("SQL execution failed: error returned from database: division by zero",)


def test_statements_that_begin_and_end_transactions_run_at_least_once(wf_dsn: str) -> None:
    """A step's own transaction cannot hold BEGIN ... COMMIT: such a step runs as written,
    outside it, and is recorded after (as VACUUM is)."""
    _table(wf_dsn, "multi_tx")
    for first in (True, False):
        prefix = "" if first else "'SELECT 1' ~> "
        steps = (
            prefix + "'BEGIN; INSERT INTO multi_tx VALUES (1); ROLLBACK;"
            " BEGIN; INSERT INTO multi_tx VALUES (2); COMMIT; SELECT count(*) AS n FROM multi_tx'"
        )
        instance, status = start_and_await(wf_dsn, steps)
        assert status == "completed"
        (_, result, details) = _nodes(wf_dsn, instance)[-1]
        assert result == {"rows": [{"n": 1 if first else 2}], "row_count": 1}
        assert "at-least-once" in json.dumps(details)
