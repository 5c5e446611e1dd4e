"""Start a workflow and wait for it, as a client would (df.start, then df.await_instance);
watch its steps' statements in pg_stat_activity."""

from __future__ import annotations

import time

import psycopg


def await_status(dsn: str, instance: str, timeout: int = 20) -> str:
    """df.await_instance's answer: the terminal status (or its timeout error)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT df.await_instance(%s, %s)", (instance, timeout)).fetchone()
    assert row is not None
    return str(row[0])


def start_and_await(
    dsn: str, graph_sql: str, *params: object, timeout: int = 20
) -> tuple[str, str]:
    """(instance id, terminal status) of `SELECT df.start(<graph_sql>)` with `params`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph_sql})", params).fetchone()
    assert row is not None
    instance = str(row[0])
    return instance, await_status(dsn, instance, timeout)


def await_running(conn: psycopg.Connection[tuple[object, ...]], instance: str) -> None:
    """Wait (up to 10 s) until the engine has picked the instance up."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute("SELECT df.status(%s)", (instance,)).fetchone()
        if row is not None and row[0] != "pending":
            return
        time.sleep(0.01)
    raise AssertionError(f"instance {instance} still pending after 10 s")


def backends_running(dsn: str, marker: str) -> int:
    """Backends (other than this one) running a statement that contains `marker`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s"
            " AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])
