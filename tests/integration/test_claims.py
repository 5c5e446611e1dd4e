"""df._poll on a catalog with no engine running: which tasks a claim takes, in which order,
and which instances a pass hands out to advance.

Instances, tasks and advance rows are written by hand as the admin, as an engine leaves
them (a crashed one, for an expired lease), a thousand days in the past so that they come
before anything other tests left in the shared catalog; each test rolls back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

POLL = "SELECT kind, instance_id, node_id, due FROM df._poll(%s, 30, %s, %s, %s::text[], 0)"
PAST = "now() - interval '1000 days'"
DEAD_ENGINE = uuid.UUID("00000000-0000-4000-8000-00000000dead")


@pytest.fixture
def conn(catalog_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(catalog_dsn) as connection:
        yield connection
        connection.rollback()


def _instance(conn: psycopg.Connection, name: str, status: str = "running") -> str:
    """An instance of one SQL node, both called `name` (8 hex digits)."""
    conn.execute(
        "INSERT INTO df.instances (id, root_node, status, submitted_by) "
        "VALUES (%s, %s, %s, 'postgres')",
        (name, name, status),
    )
    conn.execute(
        "INSERT INTO df.nodes (id, instance_id, node_type, query, status, submitted_by) "
        "VALUES (%s, %s, 'SQL', 'SELECT 1', 'running', 'postgres')",
        (name, name),
    )
    return name


def _task(
    conn: psycopg.Connection, instance: str, due_s: float, lease_s: float | None = None
) -> None:
    """The instance's task, due `due_s` seconds after PAST; leased to a dead engine until
    `lease_s` seconds after PAST when given (an expired lease)."""
    conn.execute(
        "INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at, lease_owner,"
        f" lease_token, lease_until, attempts) VALUES (%(id)s, %(id)s, 'SQL', 'SELECT 1',"
        f" {PAST} + make_interval(secs => %(due)s),"
        " CASE WHEN %(lease)s::float8 IS NOT NULL THEN %(dead)s::uuid END,"
        " CASE WHEN %(lease)s::float8 IS NOT NULL THEN gen_random_uuid() END,"
        f" {PAST} + make_interval(secs => %(lease)s::float8), 1)",
        {"id": instance, "due": due_s, "lease": lease_s, "dead": DEAD_ENGINE},
    )


def _claimed(conn: psycopg.Connection, claims: int) -> set[str]:
    """The tasks one pass claims (rolled back to a savepoint: the queue stays)."""
    with conn.transaction(force_rollback=True):
        rows = conn.execute(POLL, (uuid.uuid4(), 256, claims, [])).fetchall()
    return {r[2] for r in rows if r[0] == "task"}


def test_a_claim_takes_tasks_in_the_order_they_became_claimable(
    conn: psycopg.Connection,
) -> None:
    # a task no engine holds is claimable from its due time; one whose engine died, from
    # its lease's expiry, its due time breaking ties (one engine renews its leases together)
    _task(conn, _instance(conn, "c1a10001"), due_s=-3)
    _task(conn, _instance(conn, "c1a10002"), due_s=-8, lease_s=-2)
    _task(conn, _instance(conn, "c1a10003"), due_s=-1)
    _task(conn, _instance(conn, "c1a10004"), due_s=-4, lease_s=-0.5)
    _task(conn, _instance(conn, "c1a10005"), due_s=-4.5, lease_s=-0.5)
    order = ["c1a10001", "c1a10002", "c1a10003", "c1a10005", "c1a10004"]
    # never claimed: a lease still held, a timer not due, a paused instance's task, a task
    # whose instance is gone
    conn.execute(
        "INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at, lease_owner,"
        " lease_token, lease_until) VALUES"
        f" (%s, %s, 'SQL', '', {PAST} - interval '1 hour', gen_random_uuid(),"
        "  gen_random_uuid(), now() + interval '1 hour')",
        (_instance(conn, "c1a1f001"), "c1a1f001"),
    )
    conn.execute(
        "INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at)"
        " VALUES (%s, %s, 'SLEEP', '60', now() + interval '1 hour')",
        (_instance(conn, "c1a1f002"), "c1a1f002"),
    )
    _task(conn, _instance(conn, "c1a1f003", status="paused"), due_s=-3600)
    _task(conn, "c1a1f004", due_s=-3600)

    for claims in range(1, len(order) + 1):
        assert _claimed(conn, claims) == set(order[:claims])
    mine = {r[0] for r in conn.execute("SELECT node_id FROM df._tasks")}
    assert _claimed(conn, 64) & mine == set(order)


def _advance(conn: psycopg.Connection, instance: str, node: str, at_s: float) -> None:
    conn.execute(
        "INSERT INTO df._advance (instance_id, node_id, requested_at)"
        f" VALUES (%s, %s, {PAST} + make_interval(secs => %s))",
        (instance, node, at_s),
    )


def _handed_out(conn: psycopg.Connection, advances: int, busy: list[str]) -> list[str]:
    """The instances one pass hands out to advance, in order."""
    with conn.transaction(force_rollback=True):
        rows = conn.execute(POLL, (uuid.uuid4(), advances, 0, busy)).fetchall()
    return [r[1] for r in rows if r[0] in ("new", "advance")]


def test_instances_are_handed_out_by_their_earliest_due_advance(
    conn: psycopg.Connection,
) -> None:
    first, second, third = (_instance(conn, f"adf1000{n}") for n in range(1, 4))
    _advance(conn, first, "", -10)
    for n in range(1, 10):  # its steps' requests, later than the second's
        _advance(conn, first, f"0000000{n}", -4 + n / 100)
    _advance(conn, second, "", -5)
    _advance(conn, third, "", -3)
    assert _handed_out(conn, 2, []) == [first, second]
    assert _handed_out(conn, 3, []) == [first, second, third]


def test_a_pending_instance_whose_first_step_is_being_taken_is_left_out(
    conn: psycopg.Connection,
) -> None:
    busy, other = _instance(conn, "adf20001", status="pending"), _instance(conn, "adf20002")
    _advance(conn, busy, "", -20)
    _advance(conn, other, "", -10)
    assert _handed_out(conn, 1, [busy]) == [other]
    conn.execute("UPDATE df.instances SET status = 'running' WHERE id = %s", (busy,))
    assert _handed_out(conn, 1, [busy]) == [busy]  # promoted: due as any


def _pass(
    conn: psycopg.Connection, engine: uuid.UUID, ours: set[str], advances: int = 256
) -> list[str]:
    """The instances of `ours` one pass of `engine` hands out, in order (in the test's
    transaction: the claims stay; the shared catalog may hold other tests' instances)."""
    rows = conn.execute(POLL, (engine, advances, 0, [])).fetchall()
    return [r[1] for r in rows if r[0] in ("new", "advance") and r[1] in ours]


def test_an_instance_handed_out_is_claimed_for_its_engine_until_the_claim_runs_out(
    conn: psycopg.Connection,
) -> None:
    # several pgdurable processes on one database: one pass hands an instance to its engine,
    # and the other engines' passes leave it alone for the lease time (30 s here)
    first, second = _instance(conn, "adf30001"), _instance(conn, "adf30002")
    _advance(conn, first, "", -20)
    _advance(conn, first, "00000001", -19)
    _advance(conn, second, "", -10)
    engine_a, engine_b, engine_c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ours = {first, second}
    assert _pass(conn, engine_a, ours, advances=1) == [first]
    claims = conn.execute(
        "SELECT claimed_by, claimed_until > now() + interval '29 s' FROM df._advance "
        "WHERE instance_id = %s",
        (first,),
    ).fetchall()
    assert claims == [(engine_a, True), (engine_a, True)]  # every due row of the instance
    assert _pass(conn, engine_b, ours) == [second]
    assert _pass(conn, engine_c, ours) == []  # each claimed now
    versions = "SELECT ctid FROM df._advance WHERE instance_id = %s ORDER BY node_id"
    before = conn.execute(versions, (first,)).fetchall()
    assert _pass(conn, engine_a, ours) == [first]  # its own claims: handed out again,
    # not written again (a relayed df.start's first document names that row's version)
    assert conn.execute(versions, (first,)).fetchall() == before
    assert _pass(conn, engine_b, ours) == [second]
    conn.execute(  # engine A died: its claims ran out
        "UPDATE df._advance SET claimed_until = now() - interval '1 s' WHERE claimed_by = %s",
        (engine_a,),
    )
    assert _pass(conn, engine_c, ours) == [first]


def test_advance_rows_another_transaction_holds_are_passed_over(
    conn: psycopg.Connection, catalog_dsn: str
) -> None:
    # another process's pass claiming them, a first transaction, an advance: the instance is
    # left out of this pass, without making the next one come at once
    held, free = _instance(conn, "adf40001"), _instance(conn, "adf40002")
    _advance(conn, held, "", -20)
    _advance(conn, free, "", -10)
    conn.commit()  # (the other session must see them; removed at the end)
    try:
        with psycopg.connect(catalog_dsn) as other:
            other.execute("SELECT 1 FROM df._advance WHERE instance_id = %s FOR UPDATE", (held,))
            rows = conn.execute(POLL, (uuid.uuid4(), 256, 0, [])).fetchall()
            conn.rollback()
            other.rollback()
        assert [r[1] for r in rows if r[0] in ("new", "advance") and r[1] in (held, free)] == [free]
        (due,) = [r[3] for r in rows if r[0] == "due"]
        assert due is None or due > -86400, due  # not the held row's, due 1000 days ago
    finally:
        conn.execute("DELETE FROM df.nodes WHERE instance_id = ANY (%s)", ([held, free],))
        conn.execute("DELETE FROM df.instances WHERE id = ANY (%s)", ([held, free],))
        conn.commit()


def test_new_instances_come_with_their_state_as_many_as_asked(conn: psycopg.Connection) -> None:
    news = [_instance(conn, f"adf5000{n}", status="pending") for n in range(1, 4)]
    for n, instance in enumerate(news):
        _advance(conn, instance, "", -10 + n)
    with conn.transaction(force_rollback=True):
        rows = conn.execute(
            "SELECT kind, instance_id, payload IS NOT NULL FROM "
            "df._poll(%s, 30, 256, 0, '{}', 2) WHERE kind = 'new'",
            (uuid.uuid4(),),
        ).fetchall()
    ours = [r for r in rows if r[1] in news]  # first: due 1000 days ago
    assert ours == [("new", news[0], True), ("new", news[1], True), ("new", news[2], False)]


def test_a_pass_that_only_claims_advances_commits_without_waiting_for_its_wal(
    conn: psycopg.Connection,
) -> None:
    # a claim lost in a crash of PostgreSQL is only taken again; a task's lease is not
    # written that way
    def commit_mode(claims: int) -> str:
        with conn.transaction(force_rollback=True):
            conn.execute(POLL, (uuid.uuid4(), 256, claims, [])).fetchall()
            row = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
        assert row is not None
        return str(row[0])

    _advance(conn, _instance(conn, "adf60001"), "", -10)
    assert commit_mode(claims=0) == "off"
    _task(conn, _instance(conn, "adf60002"), due_s=-5)
    assert commit_mode(claims=1) == "on"
