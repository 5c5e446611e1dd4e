"""df.instance_activity on the catalog: every kind of wait, the stalled_for filter, and
row-level security.

Instances and the engine's rows (tasks, heartbeats, advances) are written by hand as the
admin, as an engine would leave them (a crashed one, for an expired lease), so no engine is
needed; the acceptance test (test_instance_activity.py) watches the real engine's.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

READER = "activity_reader"
COLUMNS = [
    "instance_id", "label", "status", "last_progress", "idle_for", "node_id", "node_type",
    "wait_kind", "waiting_for", "since",
]  # fmt: skip


@pytest.fixture
def conn(catalog_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(catalog_dsn, autocommit=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        yield connection
        connection.execute("DELETE FROM df._worker_epoch")


@pytest.fixture
def reader(conn: psycopg.Connection, catalog_dsn: str) -> Iterator[psycopg.Connection]:
    conn.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') "
        f"THEN CREATE ROLE {READER} LOGIN; END IF; END $$"
    )
    conn.execute("SET client_min_messages = warning")
    conn.execute("SELECT df.grant_usage(%s)", (READER,))
    with psycopg.connect(catalog_dsn, user=READER, autocommit=True) as other:
        other.execute("SET TimeZone = 'UTC'")
        yield other


def _instance(
    conn: psycopg.Connection, owner: str, node_type: str, query: str, status: str = "running"
) -> str:
    """An instance of one node (id = the instance's), both `status`, owned by `owner`."""
    instance = secrets.token_hex(4)
    with conn.transaction():
        conn.execute(
            "INSERT INTO df.instances (id, root_node, status, submitted_by) "
            "VALUES (%s, %s, %s, %s::regrole)",
            (instance, instance, status, owner),
        )
        conn.execute(
            "INSERT INTO df.nodes (id, instance_id, node_type, query, status, submitted_by) "
            "VALUES (%s, %s, %s, %s, %s, %s::regrole)",
            (instance, instance, node_type, query, status, owner),
        )
    return instance


def _task(conn: psycopg.Connection, instance: str, node_type: str, state: str) -> None:
    """The node's task: a timer due in an hour, a due one nobody leased, a leased one, or
    one whose lease expired a minute ago."""
    due, lease = {
        "timer": ("now() + interval '1 hour'", "NULL"),
        "due": ("now() - interval '1 minute'", "NULL"),
        "leased": ("now()", "now() + interval '30 seconds'"),
        "expired": ("now() - interval '2 minutes'", "now() - interval '1 minute'"),
    }[state]
    owner = "NULL" if lease == "NULL" else "gen_random_uuid()"
    conn.execute(
        "INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at, lease_owner,"
        f" lease_token, lease_until) VALUES (%s, %s, %s, '', {due}, {owner}, {owner}, {lease})",
        (instance, instance, node_type),
    )


def _activity(
    who: psycopg.Connection, stalled_for: str, among: set[str]
) -> dict[str, dict[str, object]]:
    rows = who.execute("SELECT * FROM df.instance_activity(%s::interval)", (stalled_for,))
    assert [c.name for c in rows.description or ()] == COLUMNS
    found = [dict(zip(COLUMNS, row, strict=True)) for row in rows.fetchall()]
    return {str(r["instance_id"]): r for r in found if r["instance_id"] in among}


def test_each_wait_is_named(conn: psycopg.Connection, reader: psycopg.Connection) -> None:
    # no engine has run here: forget the heartbeat rows other tests' engines left
    conn.execute("DELETE FROM df._worker_epoch")
    sleeping = _instance(conn, READER, "SLEEP", "3600")
    _task(conn, sleeping, "SLEEP", "timer")
    signal = _instance(conn, READER, "SIGNAL", '{"signal_name":"go","timeout_seconds":60}')
    running = _instance(conn, READER, "SQL", "SELECT pg_sleep(60)")
    _task(conn, running, "SQL", "leased")
    orphan = _instance(conn, READER, "SQL", "SELECT 1")
    _task(conn, orphan, "SQL", "expired")
    queued = _instance(conn, READER, "HTTP", "{}")
    _task(conn, queued, "HTTP", "due")
    pending = _instance(conn, READER, "SQL", "SELECT 1", "pending")
    for instance, ago in ((pending, "1 hour"), (sleeping, "10 minutes")):
        for table, key in (("instances", "id"), ("nodes", "instance_id")):
            conn.execute(
                f"UPDATE df.{table} SET updated_at = now() - %s::interval WHERE {key} = %s",
                (ago, instance),
            )
    theirs = _instance(conn, "postgres", "SLEEP", "3600")
    _task(conn, theirs, "SLEEP", "timer")
    ids = {sleeping, signal, running, orphan, queued, pending, theirs}

    seen = _activity(reader, "0", ids)
    assert set(seen) == ids - {theirs}
    waits = {i: (r["node_type"], r["wait_kind"], r["waiting_for"]) for i, r in seen.items()}
    assert waits[signal][:2] == ("SIGNAL", "signal")
    assert str(waits[signal][2]).startswith("signal 'go' (times out at ")
    assert waits[sleeping][:2] == ("SLEEP", "timer")
    assert str(waits[sleeping][2]).startswith("timer until ")
    assert waits[running] == ("SQL", "running", "SQL step running for 00:00:00")
    assert waits[orphan][:2] == ("SQL", "lease expired")
    assert str(waits[orphan][2]).endswith(" (engine gone?)")
    assert waits[queued][:2] == ("HTTP", "engine")
    assert str(waits[queued][2]).startswith("an engine: none has run here (due since ")
    assert waits[pending] == (None, "engine", "its first advance: an engine: none has run here")
    assert seen[pending]["status"] == "pending" and seen[sleeping]["node_id"] == sleeping

    # the longest quiet first; only those quiet for `stalled_for`
    everything = reader.execute("SELECT instance_id FROM df.instance_activity('0')").fetchall()
    order = [row[0] for row in everything if row[0] in ids]
    assert order[:2] == [pending, sleeping], order
    assert set(_activity(reader, "5 minutes", ids)) == {pending, sleeping}
    assert seen[sleeping]["idle_for"].total_seconds() >= 600  # type: ignore[attr-defined]

    # with an engine alive, a due task waits for a step slot
    conn.execute("INSERT INTO df._worker_epoch (epoch_id) VALUES (gen_random_uuid())")
    queued_now = _activity(reader, "0", {queued, pending})
    assert str(queued_now[queued]["waiting_for"]).startswith("a step slot (due since ")
    assert queued_now[pending]["waiting_for"] == "its first advance"


def test_only_the_callers_instances(conn: psycopg.Connection, reader: psycopg.Connection) -> None:
    theirs = _instance(conn, "postgres", "SQL", "SELECT pg_sleep(60)")
    _task(conn, theirs, "SQL", "leased")
    assert _activity(reader, "0", {theirs}) == {}
    # the helper, called directly, answers nothing for an instance of another role
    found = reader.execute("SELECT * FROM df._instance_waits(ARRAY[%s])", (theirs,)).fetchall()
    assert found == []
    assert _activity(conn, "0", {theirs})[theirs]["wait_kind"] == "running"  # the owner's
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="must not be negative"):
        reader.execute("SELECT * FROM df.instance_activity('-1 second')")
