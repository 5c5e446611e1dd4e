"""Defects an adversarial run found in the engine's behaviour, each reproduced through
pgdurable as a user would meet it."""

from __future__ import annotations

import time

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_running, await_status, backends_running


def _start(dsn: str, graph_sql: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph_sql})").fetchone()
    assert row is not None
    return str(row[0])


def _count_nodes(dsn: str, instance: str, node_type: str, status: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM df.nodes WHERE instance_id = %s AND node_type = %s "
            "AND status = %s",
            (instance, node_type, status),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _wait_node(dsn: str, instance: str, node_type: str, status: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _count_nodes(dsn, instance, node_type, status) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{instance}: fewer than {count} {node_type} nodes {status}")


def test_one_signal_satisfies_one_wait(wf_dsn: str) -> None:
    """A consumed signal was never marked consumed, so one df.signal satisfied
    `wait('go') ~> wait('go')` (and drove a loop of waits 7 times)."""
    instance = _start(wf_dsn, "df.wait_for_signal('go') ~> df.wait_for_signal('go') ~> 'SELECT 1'")
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        await_running(conn, instance)
        conn.execute("SELECT df.signal(%s, 'go', '1')", (instance,))
    _wait_node(wf_dsn, instance, "SIGNAL", "completed", 1)
    time.sleep(0.5)  # time enough for a reused signal to complete the second wait too
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        waits = conn.execute(
            "SELECT status FROM df.nodes WHERE instance_id = %s AND node_type = 'SIGNAL' "
            "ORDER BY status",
            (instance,),
        ).fetchall()
        assert waits == [("completed",), ("running",)]
        conn.execute("SELECT df.signal(%s, 'go', '2')", (instance,))
    assert await_status(wf_dsn, instance) == "completed"


def test_an_instance_the_planner_cannot_plan_fails_once_with_the_reason(
    wf_dsn: str, proxy: ProxyProcess, cluster: Cluster
) -> None:
    """A node configuration the planner cannot read (here written by hand after df.start's
    checks, as an instance from before them would have it) failed in a tight loop: 7,780
    tracebacks and pending for ever. It now fails its instance once."""
    with psycopg.connect(cluster.dsn()) as admin, admin.transaction():
        admin.execute("SET ROLE wf_user")
        row = admin.execute("SELECT df.start('SELECT 1' ~> df.sleep(1))").fetchone()
        assert row is not None
        instance = str(row[0])
        admin.execute("RESET ROLE")
        admin.execute(
            "UPDATE df.nodes SET query = 'abc' WHERE instance_id = %s AND node_type = 'SLEEP'",
            (instance,),
        )
    assert await_status(wf_dsn, instance) == "failed"
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT output FROM df._executions WHERE instance_id = %s", (instance,)
        ).fetchone()
    assert row is not None and "could not plan this instance" in str(row[0]), row
    time.sleep(0.3)
    assert proxy.log_path is not None
    failures = [
        line
        for line in proxy.log_path.read_text().splitlines()
        if "event=plan_failed" in line and instance in line
    ]
    assert len(failures) == 1, failures


def test_a_wide_graph_does_not_keep_another_owners_hello_world_waiting(
    wf_dsn: str, proxy: ProxyProcess, cluster: Cluster
) -> None:
    """One owner's graph of many parallel steps took every step slot, and another owner's
    hello world waited behind all of them. Owners now take turns for slots."""
    other = "wf_fair_other"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (other,)).fetchone():
            admin.execute(f"CREATE ROLE {other} LOGIN")
    with psycopg.connect(proxy.dsn(), autocommit=True) as admin:
        admin.execute("SELECT df.grant_usage(%s)", (other,))
    leaves = " & ".join(["'SELECT pg_sleep(0.1)'"] * 60)
    wide = _start(wf_dsn, f"({leaves})")
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        await_running(conn, wide)
    _wait_node(wf_dsn, wide, "SQL", "running", 10)
    hello = _start(proxy.dsn(other), "'SELECT 1'")
    assert await_status(proxy.dsn(other), hello) == "completed"
    done = _count_nodes(wf_dsn, wide, "SQL", "completed")
    assert done < 40, f"the hello world waited for {done} steps"
    assert await_status(wf_dsn, wide, 60) == "completed"


def test_a_cancelled_instances_slow_first_step_is_not_run_again(wf_dsn: str) -> None:
    """A first step still running when its instance was cancelled was started again as an
    ordinary step: it ran to the end for nothing, holding a step slot."""
    marker = f"first_step_{time.monotonic_ns()}"
    dsn = wf_dsn
    instance = _start(dsn, f"'SELECT pg_sleep(60) AS {marker}'")
    deadline = time.monotonic() + 10
    while backends_running(dsn, marker) == 0:
        assert time.monotonic() < deadline, "the first step never ran"
        time.sleep(0.02)
    time.sleep(0.3)  # long enough for the first plan to be committed apart (promoted)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT df.cancel(%s)", (instance,))
    deadline = time.monotonic() + 5
    while backends_running(dsn, marker):
        assert time.monotonic() < deadline, "the cancelled step still runs"
        time.sleep(0.02)
    time.sleep(0.5)
    assert backends_running(dsn, marker) == 0, "the cancelled step was started again"
    assert await_status(dsn, instance, 10) == "cancelled"
