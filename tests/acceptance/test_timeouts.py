"""df.timeout(fut, seconds) and df.retry(fut, max_attempts, initial_backoff, max_backoff):
a deadline and a failure policy for one subgraph.

A timeout that expires fails its node with SQLSTATE 57014's text and cancels what still
runs in its subgraph (SQL in PostgreSQL included); a retry policy decides for the steps
under it, and re-runs a subgraph whose timeout expired."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.acceptance.test_retries import make_counter, start
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status, backends_running


def await_no_backend(dsn: str, marker: str) -> None:
    deadline = time.monotonic() + 2
    while backends_running(dsn, marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends_running(dsn, marker) == 0


def node_rows(dsn: str, instance: str) -> dict[str, tuple[str, str | None]]:
    """node_type -> (status, error text) of an instance's nodes (one of each type)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT node_type, status, CASE WHEN status = 'failed' THEN result #>> '{}' END"
            " FROM df.nodes WHERE instance_id = %s",
            (instance,),
        ).fetchall()
    return {str(r[0]): (str(r[1]), r[2]) for r in rows}


def sleep_step(marker: str, seconds: int = 60) -> str:
    return f"SELECT pg_sleep({seconds}) /* {marker} */"


def test_an_expired_timeout_fails_and_cancels_its_running_sql(wf_dsn: str) -> None:
    marker = uuid.uuid4().hex
    began = time.monotonic()
    instance = start(wf_dsn, "df.timeout(%s, 1)", sleep_step(marker))
    assert await_status(wf_dsn, instance, 10) == "failed"
    assert time.monotonic() - began < 3
    status, error = node_rows(wf_dsn, instance)["TIMEOUT"]
    assert status == "failed"
    assert error == ("canceling statement due to timeout: df.timeout(1 s) expired (SQLSTATE 57014)")
    await_no_backend(wf_dsn, marker)


def test_a_step_within_a_deadline_runs_under_a_statement_timeout_of_what_remains(
    wf_dsn: str,
) -> None:
    """Its own limit, what remains of the deadline and a second more, is the backstop for a
    step that no engine is there to cancel; the durable deadline normally comes first."""
    shown = "SELECT setting::int AS ms FROM pg_settings WHERE name = 'statement_timeout'"
    instance = start(wf_dsn, "df.timeout(df.seq('SELECT 1', %s), 30)", shown)
    assert await_status(wf_dsn, instance, 10) == "completed"
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute("SELECT df.result(%s)::jsonb #> '{rows,0,ms}'", (instance,)).fetchone()
    assert row is not None and 29_000 < int(row[0]) <= 31_000, row
    outside = start(wf_dsn, "%s", shown)
    assert await_status(wf_dsn, outside, 10) == "completed"
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute("SELECT df.result(%s)::jsonb #> '{rows,0,ms}'", (outside,)).fetchone()
    assert row is not None and int(row[0]) == 0, row  # no deadline, no limit


def test_a_composite_times_out_as_a_whole(wf_dsn: str) -> None:
    marker = uuid.uuid4().hex
    graph = "df.timeout(df.seq('SELECT pg_sleep(0.3)', %s), 1.2)"
    began = time.monotonic()
    instance = start(wf_dsn, graph, sleep_step(marker))
    assert await_status(wf_dsn, instance, 10) == "failed"
    assert time.monotonic() - began < 3.5
    nodes = node_rows(wf_dsn, instance)
    assert nodes["TIMEOUT"] == (
        "failed",
        "canceling statement due to timeout: df.timeout(1.2 s) expired (SQLSTATE 57014)",
    )
    assert nodes["THEN"][0] == "running"  # abandoned with what ran in it, as a RACE loser
    with psycopg.connect(wf_dsn) as conn:
        live = conn.execute("SELECT df.explain(%s)", (instance,)).fetchone()
        listed = conn.execute(
            "SELECT count(*) FROM df.instance_nodes(%s) WHERE node_type = 'TIMEOUT'"
            " AND status = 'failed'",
            (instance,),
        ).fetchone()
    assert live is not None and "TIMEOUT 1.2s ✗" in str(live[0])
    assert listed == (1,)
    await_no_backend(wf_dsn, marker)


def test_a_subgraph_within_its_deadline_completes_and_leaves_no_timer(
    wf_dsn: str, proxy: ProxyProcess
) -> None:
    instance = start(wf_dsn, "df.timeout(df.seq('SELECT 1', 'SELECT 2 AS two'), 30)")
    assert await_status(wf_dsn, instance, 10) == "completed"
    assert node_rows(wf_dsn, instance)["TIMEOUT"][0] == "completed"
    with psycopg.connect(wf_dsn) as conn:
        result = conn.execute("SELECT df.result(%s)", (instance,)).fetchone()
    assert result is not None and '"two": 2' in str(result[0])
    with psycopg.connect(proxy.dsn()) as conn:  # the catalog's owner reads engine rows
        for table in ("df._tasks", "df._advance"):
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE instance_id = %s", (instance,))
            assert row.fetchone() == (0,), table


def test_a_retry_policy_applies_to_the_steps_of_its_subgraph(wf_dsn: str) -> None:
    counter = make_counter(wf_dsn)
    graph = "df.retry(%s, 3, '0.1 s', '0.2 s')"  # the instance itself has no policy
    instance = start(wf_dsn, graph, counter.step(failures=2))
    assert await_status(wf_dsn, instance, 10) == "completed"
    assert counter.attempts() == 3
    # the nearest policy decides: one attempt inside, whatever the outer one allows
    counter = make_counter(wf_dsn)
    graph = "df.retry(df.retry(%s, 1), 3, '0.1 s', '0.2 s')"
    instance = start(wf_dsn, graph, counter.step(failures=1))
    assert await_status(wf_dsn, instance, 10) == "failed"
    assert counter.attempts() == 1


def test_a_retry_around_a_timeout_runs_its_subgraph_again(wf_dsn: str) -> None:
    marker = uuid.uuid4().hex
    counter = make_counter(wf_dsn)
    # the first attempt sleeps (and is cancelled at the deadline), the second does not
    step = (
        f"SELECT CASE WHEN nextval('{counter.name}') = 1 THEN pg_sleep(60)::text END /* {marker} */"
    )
    graph = "df.retry(df.timeout(%s, 0.8), 2, '0.1 s', '0.2 s')"
    began = time.monotonic()
    instance = start(wf_dsn, graph, step)
    assert await_status(wf_dsn, instance, 10) == "completed"
    assert time.monotonic() - began < 3
    assert counter.attempts() == 2
    assert node_rows(wf_dsn, instance)["TIMEOUT"][0] == "completed"
    await_no_backend(wf_dsn, marker)


RERUN_STEP = """CREATE OR REPLACE FUNCTION timeouts_rerun(counter text) RETURNS integer
LANGUAGE plpgsql AS $f$
DECLARE
    n integer := nextval(counter);
BEGIN
    IF n IN (1, 3) THEN
        RAISE EXCEPTION 'attempt % failed', n USING ERRCODE = '40001';
    ELSIF n = 2 THEN
        PERFORM pg_sleep(60);
    END IF;
    RETURN n;
END
$f$"""


def test_a_subgraph_run_again_gives_its_steps_their_attempts_afresh(wf_dsn: str) -> None:
    """Attempt 1 fails (retried in place), attempt 2 times out (the subgraph runs again),
    attempt 3 fails: in the new run it is the step's first failure, not its second."""
    counter = f"rerun_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute(RERUN_STEP)
        conn.execute(f"CREATE SEQUENCE {counter}")
    step = f"SELECT timeouts_rerun('{counter}') AS n"
    instance = start(wf_dsn, "df.retry(df.timeout(%s, 0.8), 2, '0.1 s', '0.2 s')", step)
    assert await_status(wf_dsn, instance, 10) == "completed"
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute(f"SELECT last_value FROM {counter}").fetchone()
    assert row == (4,)


def test_explain_shows_the_policy_and_the_deadline(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute(
            "SELECT df.explain(df.retry(df.timeout('SELECT 1', 2.5), 4, '0.5 s', '8 s'))"
        ).fetchone()
    assert row is not None
    plan = str(row[0])
    assert "RETRY (4 attempts, backoff 0.5s to 8s)" in plan
    assert "TIMEOUT 2.5s" in plan
    assert "SQL: SELECT 1" in plan


@pytest.mark.parametrize(
    "call",
    [
        "df.timeout('SELECT 1', 0)",
        "df.timeout('SELECT 1', NULL)",
        "df.retry('SELECT 1', 0)",
        "df.retry('SELECT 1', 2, '0 s')",
        "df.retry('SELECT 1', 2, '1 s', '-1 s')",
    ],
)
def test_bad_arguments_are_refused(wf_dsn: str, call: str) -> None:
    with psycopg.connect(wf_dsn) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(f"SELECT {call}")
    assert raised.value.sqlstate == "22023"


@pytest.mark.parametrize("wrapper", ["df.retry(%s, 2)", "df.timeout(%s, 5)"])
def test_a_broken_step_inside_is_reported_at_df_start(wf_dsn: str, wrapper: str) -> None:
    sql = "SELECT df.start(" + wrapper % "'SELEC 2'" + ")"
    with psycopg.connect(wf_dsn) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(sql)
    assert raised.value.sqlstate == "42601"
    assert raised.value.diag.statement_position == str(sql.index("SELEC 2") + 1)
