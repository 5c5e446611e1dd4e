"""df.pause and df.resume through pgdurable: a paused instance starts no new step (the one
running finishes and records its result), df.resume goes on; df.resume of a failed instance
runs its failed node again and keeps every completed step's result, in a new execution.
Effects are counted in a table the steps write to."""

from __future__ import annotations

import time

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_running, await_status

OTHER_ROLE = "pause_other"
EFFECTS = "CREATE TABLE IF NOT EXISTS pause_effects (instance_id text, step integer)"


def _insert(step: int) -> str:
    return f"'INSERT INTO pause_effects VALUES (''{{sys_instance_id}}'', {step})'"


@pytest.fixture(scope="module")
def dsn(wf_dsn: str) -> str:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute(EFFECTS)
    return wf_dsn


@pytest.fixture(scope="module")
def other_dsn(cluster: Cluster, proxy: ProxyProcess) -> str:
    """Through pgdurable, a role with df usage that does not own wf_user's instances."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OTHER_ROLE,)).fetchone():
            admin.execute(f"CREATE ROLE {OTHER_ROLE} LOGIN")
            admin.execute("SELECT df.grant_usage(%s)", (OTHER_ROLE,))
    return proxy.dsn(OTHER_ROLE)


def _start(dsn: str, graph: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph})").fetchone()
    assert row is not None
    return str(row[0])


def _effects(dsn: str, instance: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT step FROM pause_effects WHERE instance_id = %s ORDER BY step", (instance,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def _one(dsn: str, sql: str, *params: object) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def test_a_paused_instance_starts_no_step_until_resumed(dsn: str) -> None:
    instance = _start(dsn, f"{_insert(1)} ~> 'SELECT pg_sleep(0.5)' ~> {_insert(2)}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        await_running(conn, instance)
        deadline = time.monotonic() + 5
        count = "SELECT count(*) FROM pause_effects WHERE instance_id = %s"
        while conn.execute(count, (instance,)).fetchone() != (1,):
            assert time.monotonic() < deadline
            time.sleep(0.005)  # the first step committed: the sleep runs now
        paused = conn.execute("SELECT df.pause(%s)", (instance,)).fetchone()
        assert paused == (f"Instance {instance} paused",)
        time.sleep(1.0)  # the sleep ended meanwhile; the last INSERT must not start
        assert conn.execute("SELECT df.status(%s)", (instance,)).fetchone() == ("paused",)
        listed = conn.execute(
            "SELECT instance_id FROM df.list_instances('paused') WHERE instance_id = %s",
            (instance,),
        ).fetchall()
        assert listed == [(instance,)]
        explained = conn.execute("SELECT df.explain(%s)", (instance,)).fetchone()
        assert explained is not None and "\nStatus:   ⏸ Paused\n" in str(explained[0])
        assert _effects(dsn, instance) == [1]
        resumed = conn.execute("SELECT df.resume(%s)", (instance,)).fetchone()
        assert resumed == (f"Instance {instance} resumed",)
    assert await_status(dsn, instance, 10) == "completed"
    assert _effects(dsn, instance) == [1, 2]


def test_a_timer_due_while_paused_fires_after_resume(dsn: str) -> None:
    instance = _start(dsn, f"df.sleep(1) ~> {_insert(1)}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT df.pause(%s)", (instance,))
        time.sleep(1.2)  # the timer came due meanwhile
        sleeps = conn.execute(
            "SELECT status FROM df.instance_nodes(%s) WHERE node_type = 'SLEEP'", (instance,)
        ).fetchall()
        assert sleeps in ([("running",)], [("pending",)])  # paused before or after it began
        assert conn.execute("SELECT df.status(%s)", (instance,)).fetchone() == ("paused",)
        conn.execute("SELECT df.resume(%s)", (instance,))
    assert await_status(dsn, instance, 10) == "completed"
    assert _effects(dsn, instance) == [1]


def test_an_instance_paused_before_it_began_begins_once_resumed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT df.start({_insert(1)})").fetchone()
        assert row is not None
        instance = str(row[0])
        conn.execute("SELECT df.pause(%s)", (instance,))
    time.sleep(0.3)
    assert _one(dsn, "SELECT df.status(%s)", instance) == "paused"
    assert _effects(dsn, instance) == []
    assert _one(dsn, "SELECT df.resume(%s)", instance) == f"Instance {instance} resumed"
    assert await_status(dsn, instance, 10) == "completed"
    assert _effects(dsn, instance) == [1]


def test_resume_after_a_failure_runs_only_the_failed_node(dsn: str) -> None:
    table = f"pause_missing_{int(time.time() * 1000)}"
    failing = f"'INSERT INTO {table} VALUES (1)'"
    graph = f"{_insert(1)} ~> ({failing} & {_insert(2)}) ~> {_insert(3)}"
    instance = _start(dsn, graph)
    assert await_status(dsn, instance, 10) == "failed"
    assert _effects(dsn, instance) == [1, 2]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (x integer)")
        conn.execute("SELECT df.resume(%s)", (instance,))
    assert await_status(dsn, instance, 10) == "completed"
    assert _effects(dsn, instance) == [1, 2, 3]  # the completed steps did not run again
    assert _one(dsn, f"SELECT count(*) FROM {table}") == 1
    executions = _one(
        dsn,
        "SELECT array_agg(status ORDER BY execution_id) FROM df.instance_executions(%s)",
        instance,
    )
    assert executions == ["Failed", "Completed"]
    statuses = _one(
        dsn,
        "SELECT array_agg(DISTINCT inferred_status) FROM df.instance_nodes(%s)",
        instance,
    )
    assert statuses == ["completed"]


def test_only_the_owner_pauses_resumes_or_cancels_a_paused_instance(
    dsn: str, other_dsn: str
) -> None:
    instance = _start(dsn, "'SELECT pg_sleep(0.3)'")
    for call in ("df.pause", "df.resume"):
        with psycopg.connect(other_dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.UndefinedObject, match="access denied"):
                conn.execute(f"SELECT {call}(%s)", (instance,))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT df.pause(%s)", (instance,))
        conn.execute("SELECT df.cancel(%s)", (instance,))
    assert await_status(dsn, instance, 10) == "cancelled"


def test_resume_of_a_finished_instance_and_pause_of_one_are_refused(dsn: str) -> None:
    instance = _start(dsn, "'SELECT 1'")
    assert await_status(dsn, instance, 10) == "completed"
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="'completed'"):
            conn.execute("SELECT df.resume(%s)", (instance,))
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="'completed'"):
            conn.execute("SELECT df.pause(%s)", (instance,))
        assert conn.execute("SELECT df.status(%s)", (instance,)).fetchone() == ("completed",)
