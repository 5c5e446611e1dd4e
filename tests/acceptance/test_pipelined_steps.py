"""A chained step's statement sent in the flight of its predecessor's COMMIT (one round trip
for both): it runs exactly once, only when that COMMIT leased it, and its errors, a
statement that cannot run in a transaction block and a stale prepared statement are
handled as a step's own."""

from __future__ import annotations

import json
import uuid

import psycopg

from tests.support.metrics import read_metrics
from tests.support.proxy import ProxyProcess
from tests.support.workflows import start_and_await


def _table(dsn: str, columns: str) -> str:
    name = f"pipe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} ({columns})")
    return name


def _pipelined(proxy: ProxyProcess) -> float:
    return read_metrics(proxy.http_port)["pipelined_steps_total"]


def _node(dsn: str, instance: str, query: str) -> tuple[str, str | None]:
    """The status and result of the instance's SQL step whose query starts with `query`."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT status, result FROM df.instance_nodes(%s) WHERE query LIKE %s",
            (instance, query.replace("%", "%%") + "%"),
        ).fetchone()
    assert row is not None, query
    return str(row[0]), row[1]


def test_chained_steps_run_once_each_with_their_statement_sent_ahead(
    proxy: ProxyProcess, wf_dsn: str
) -> None:
    """Every step after the first goes with its predecessor's COMMIT, runs once, sees what
    the step before it committed, and finds a reset session; twice, so the second run's
    statements are prepared already."""
    table = _table(wf_dsn, "instance text, step int, seen bigint")
    steps = [
        f"'INSERT INTO {table} SELECT ''{{sys_instance_id}}'', {n}, count(*) FROM {table} "
        f"WHERE instance = ''{{sys_instance_id}}'' AND "
        "current_setting(''test.leak'', true) IS DISTINCT FROM ''x'''"
        f" ~> 'SELECT set_config(''test.leak'', ''x'', false)'"
        for n in range(1, 5)
    ]
    graph = " ~> ".join(steps)
    before = _pipelined(proxy)
    instances = []
    for _ in range(2):
        instance, status = start_and_await(wf_dsn, graph)
        assert status == "completed", status
        instances.append(instance)
    pipelined = _pipelined(proxy) - before
    assert pipelined >= 2 * 6, pipelined  # of 2 x 8 steps: all but the first one or two
    with psycopg.connect(wf_dsn) as conn:
        rows = conn.execute(
            f"SELECT instance, step, seen FROM {table} ORDER BY 1, 2", prepare=False
        ).fetchall()
    assert rows == sorted((i, n, n - 1) for i in instances for n in range(1, 5))


def test_a_statement_whose_step_the_commit_did_not_lease_never_runs(
    proxy: ProxyProcess, wf_dsn: str
) -> None:
    """The second step cancels its own instance: its transaction records it but cannot
    apply the plan made from held state, which leased the third step. That step's
    statement, already sent behind the COMMIT (prepared on the connection by the workflow
    run just before, while the gate was shut), must not run: it would draw from a
    sequence, which no rollback undoes."""
    gate = _table(wf_dsn, "open boolean")
    sequence = f"{gate}_seq"
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {sequence}")
    draw = f"'SELECT nextval(''{sequence}'') AS n FROM {gate} WHERE open'"
    for _ in range(3):
        _, status = start_and_await(wf_dsn, f"'SELECT 1' ~> {draw}")
        assert status == "completed", status
        with psycopg.connect(wf_dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {gate} VALUES (true)")
        before = _pipelined(proxy)
        instance, status = start_and_await(
            wf_dsn, f"'SELECT 1' ~> 'SELECT df.cancel(''{{sys_instance_id}}'')' ~> {draw}"
        )
        assert status == "cancelled", status
        assert _pipelined(proxy) - before >= 1  # the cancelling step itself went ahead
        with psycopg.connect(wf_dsn, autocommit=True) as conn:
            assert conn.execute(f"SELECT is_called FROM {sequence}").fetchone() == (False,)
            conn.execute(f"DELETE FROM {gate}")
        assert _node(wf_dsn, instance, "SELECT df.cancel")[0] == "completed"
        assert _node(wf_dsn, instance, "SELECT nextval")[1] is None


def test_an_error_of_a_statement_sent_ahead_fails_its_step_alone(
    proxy: ProxyProcess, wf_dsn: str
) -> None:
    """The statement sent with the COMMIT fails: the step before it stays committed, the
    step fails with its own error, and the connection runs the next workflow."""
    table = _table(wf_dsn, "v int")
    graph = f"'INSERT INTO {table} VALUES (1)' ~> 'INSERT INTO {table} VALUES (2 / 0)'"
    for _ in range(2):
        instance, status = start_and_await(wf_dsn, graph)
        assert status == "failed", status
        assert _node(wf_dsn, instance, f"INSERT INTO {table} VALUES (2") == (
            "failed",
            '"SQL execution failed: error returned from database: division by zero"',
        )
    with psycopg.connect(wf_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)
    instance, status = start_and_await(wf_dsn, f"'SELECT 1' ~> 'SELECT count(*) FROM {table}'")
    assert status == "completed"


def test_a_statement_sent_ahead_that_cannot_run_in_a_transaction_runs_apart(
    wf_dsn: str,
) -> None:
    """VACUUM behind a COMMIT: it fails in the transaction the COMMIT began, and runs again
    outside it, recorded at-least-once."""
    table = _table(wf_dsn, "v int")
    for _ in range(2):
        instance, status = start_and_await(wf_dsn, f"'SELECT 1' ~> 'VACUUM {table}'")
        assert status == "completed", status
        with psycopg.connect(wf_dsn) as conn:
            details = conn.execute(
                "SELECT status_details FROM df.instance_nodes(%s) WHERE query LIKE 'VACUUM%%'",
                (instance,),
            ).fetchone()
        assert details is not None and "at-least-once" in str(details[0])


def test_a_statement_sent_ahead_that_no_longer_fits_its_table_is_prepared_again(
    wf_dsn: str,
) -> None:
    """The statement kept prepared on the connection fails (its table changed) when it is
    sent behind a COMMIT: the step runs again, freshly prepared, once."""
    table = _table(wf_dsn, "v int")
    graph = f"'INSERT INTO {table} VALUES (1)' ~> 'SELECT * FROM {table}'"
    instance, status = start_and_await(wf_dsn, graph)
    assert status == "completed"
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN w text DEFAULT 'x'")
    instance, status = start_and_await(wf_dsn, graph)
    assert status == "completed", status
    status, result = _node(wf_dsn, instance, "SELECT * FROM")
    assert json.loads(result or "null") == {
        "rows": [{"v": 1, "w": "x"}, {"v": 1, "w": "x"}],
        "row_count": 2,
    }
