"""The catalog's own defences, checked against a migrated database (no engine running but
its presence, engine/presence.py: df.start wants an engine ready; the tests play the rest).

Each test reproduces a step of an attack an adversarial run made through pgdurable, at the
catalog level, with ordinary roles hostile to each other.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from psycopg import errors

from engine.connections.step_connection import BOOKKEEPING
from engine.queries import queries
from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import engine_presence

ROLES = ("hard_alice", "hard_bob")


@pytest.fixture(scope="module")
def admin(catalog_dsn: str, cluster: Cluster) -> Iterator[psycopg.Connection]:
    with engine_presence(catalog_dsn), psycopg.connect(catalog_dsn, autocommit=True) as conn:
        for role in ROLES:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                continue
            conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute("SELECT df.grant_usage(%s)", (role,))
        yield conn


def _as(catalog_dsn: str, role: str) -> psycopg.Connection:
    return psycopg.connect(catalog_dsn.replace("postgres@", f"{role}@", 1), autocommit=True)


def _start(catalog_dsn: str, role: str, fut: str) -> str:
    with _as(catalog_dsn, role) as conn:
        row = conn.execute("SELECT df.start(%s)", (fut,)).fetchone()
        assert row is not None
        return str(row[0])


def test_every_security_definer_function_pins_its_search_path(admin: psycopg.Connection) -> None:
    rows = admin.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "WHERE p.pronamespace = 'df'::regnamespace AND p.prosecdef "
        "AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')"
    ).fetchall()
    assert rows == []


def test_the_engine_calls_on_step_sessions_only_pinned_security_definer_functions(
    admin: psycopg.Connection,
) -> None:
    """The functions a step session's bookkeeping calls resolve names with their own path."""
    called = {
        name
        for statement in BOOKKEEPING
        for name in re.findall(r"\bdf\.(\w+)\(", queries()[statement])
    }
    rows = admin.execute(
        "SELECT p.proname, p.prosecdef, "
        "EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%') "
        "FROM pg_proc p WHERE p.pronamespace = 'df'::regnamespace AND p.proname = ANY (%s)",
        (sorted(called),),
    ).fetchall()
    assert {r[0] for r in rows} == called
    assert all(r[1] and r[2] for r in rows), rows


def test_df_wake_tells_a_listener_nothing_about_another_owners_instances(
    admin: psycopg.Connection, catalog_dsn: str
) -> None:
    with _as(catalog_dsn, "hard_alice") as alice:
        alice.execute("LISTEN df_wake")
        bobs = _start(catalog_dsn, "hard_bob", "SELECT 3")
        with _as(catalog_dsn, "hard_bob") as bob:
            bob.execute("SELECT df.cancel(%s)", (bobs,))
        payloads = [n.payload for n in alice.notifies(timeout=1.0, stop_after=2)]
    assert len(payloads) == 2
    for payload in payloads:
        assert bobs not in payload and "hard_bob" not in payload


def test_a_user_cannot_lock_the_variables_table_against_everyone_else(
    admin: psycopg.Connection, catalog_dsn: str
) -> None:
    with _as(catalog_dsn, "hard_alice") as alice:
        alice.execute("SELECT df.setvar('greeting', 'hi')")
        alice.execute("SELECT df.setvar('greeting', 'hello')")
        assert alice.execute("SELECT df.getvar('greeting')").fetchone() == ("hello",)
        for mode in ("ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"):
            with pytest.raises(errors.InsufficientPrivilege), alice.transaction():
                alice.execute(f"LOCK TABLE df.vars IN {mode} MODE")
        alice.execute("SELECT df.unsetvar('greeting')")
        assert alice.execute("SELECT df.getvar('greeting')").fetchone() == (None,)
        alice.execute("SELECT df.setvar('a', '1')")
        alice.execute("SELECT df.clearvars()")
        assert alice.execute("SELECT count(*) FROM df.vars").fetchone() == (0,)


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        ('{"node_type":"SLEEP","query":"abc"}', "SLEEP node requires a number of seconds"),
        ('{"node_type":"SLEEP","query":"1e300"}', "SLEEP node requires a number of seconds"),
        ('{"node_type":"SIGNAL","query":"go"}', "query in SIGNAL must be valid JSON config"),
        ('{"node_type":"SIGNAL","query":"[1]"}', "query in SIGNAL must be a JSON config object"),
        ('{"node_type":"SIGNAL","query":"{}"}', "SIGNAL node requires a signal_name string"),
        (
            '{"node_type":"SIGNAL","query":"{\\"signal_name\\":\\"a\\",\\"timeout_seconds\\":1e300}"}',
            "timeout_seconds of a SIGNAL node must be a number",
        ),
        ('{"node_type":"WAIT_SCHEDULE","query":"[]"}', "must be a JSON config object"),
        (
            '{"node_type":"THEN","left_node":{"node_type":"SQL","query":"SELECT 1"},'
            '"right_node":{"node_type":"SLEEP","query":"soon"}}',
            "root.right: SLEEP node requires",
        ),
    ],
)
def test_a_poison_pill_leaf_is_refused_at_start_with_its_path(
    admin: psycopg.Connection, catalog_dsn: str, node: str, problem: str
) -> None:
    with _as(catalog_dsn, "hard_alice") as alice:
        with pytest.raises(errors.InvalidParameterValue) as caught:
            alice.execute("SELECT df.start(%s)", (node,))
        assert problem in str(caught.value)
        assert str(caught.value).startswith("Invalid durable function graph: root")


def test_renewing_leases_does_not_wait_for_a_step_recording_its_result(
    admin: psycopg.Connection, catalog_dsn: str
) -> None:
    """A wide graph's step transactions held their task rows while they waited on each
    other; the engine's lease renewal waited behind them (16 minutes) and every other lease
    expired. A locked task row is now passed over, and still counted as this engine's."""
    instance = _start(catalog_dsn, "hard_alice", "SELECT 4")
    engine, busy, free = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for node, token in (("busy0001", busy), ("free0001", free)):
        admin.execute(
            "INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at,"
            " lease_owner, lease_token, lease_until) VALUES (%s, %s, 'SQL', 'SELECT 1', now(),"
            " %s, %s, now() + interval '1 second')",
            (instance, node, engine, token),
        )
    with psycopg.connect(catalog_dsn) as step, step.transaction():
        step.execute("SELECT 1 FROM df._tasks WHERE lease_token = %s FOR UPDATE", (busy,))
        admin.execute("SET lock_timeout = '2s'")
        try:
            kept = admin.execute(
                queries()["renew_leases"]
                .replace("$1", "%(engine)s")
                .replace("$2", "%(seconds)s")
                .replace("$3", "%(tokens)s"),
                {"engine": engine, "seconds": 60, "tokens": [busy, free]},
            ).fetchall()
        finally:
            admin.execute("RESET lock_timeout")
    assert sorted(r[0] for r in kept) == sorted([busy, free])
    row = admin.execute(
        "SELECT lease_until > now() + interval '30 seconds' FROM df._tasks WHERE lease_token = %s",
        (free,),
    ).fetchone()
    assert row == (True,)
    admin.execute("DELETE FROM df._tasks WHERE instance_id = %s", (instance,))


def test_a_long_loop_keeps_its_latest_executions_not_one_row_per_iteration(
    admin: psycopg.Connection, catalog_dsn: str
) -> None:
    instance = _start(catalog_dsn, "hard_alice", "SELECT 5")
    for execution in range(1, 131):
        plan = {"events": execution, "execution_id": execution}
        if execution > 1:
            plan["continued_from"] = execution - 1
        admin.execute("SELECT df._apply_plan(%s, %s)", (instance, json.dumps(plan)))
    rows = admin.execute(
        "SELECT count(*), min(execution_id), max(execution_id) FROM df._executions "
        "WHERE instance_id = %s",
        (instance,),
    ).fetchone()
    assert rows == (100, 31, 130)


def test_an_instance_leaves_no_signal_rows_behind_when_it_ends(
    admin: psycopg.Connection, catalog_dsn: str
) -> None:
    instance = _start(catalog_dsn, "hard_alice", "SELECT 6")
    with _as(catalog_dsn, "hard_alice") as alice:
        for name in ("a", "b"):
            alice.execute("SELECT df.signal(%s, %s)", (instance, name))
    first = admin.execute(
        "SELECT min(id) FROM df._signals WHERE instance_id = %s", (instance,)
    ).fetchone()
    assert first is not None
    consumed = {
        "consumed_signals": [{"id": first[0], "node_id": "x"}],
        "events": 1,
        "execution_id": 1,
    }
    admin.execute("SELECT df._apply_plan(%s, %s)", (instance, json.dumps(consumed)))
    left = admin.execute("SELECT count(*) FROM df._signals WHERE instance_id = %s", (instance,))
    assert left.fetchone() == (1,)  # the one consumed is gone
    ended = {
        "instance_status": "completed",
        "execution_status": "Completed",
        "events": 2,
        "execution_id": 1,
    }
    admin.execute("SELECT df._apply_plan(%s, %s)", (instance, json.dumps(ended)))
    left = admin.execute("SELECT count(*) FROM df._signals WHERE instance_id = %s", (instance,))
    assert left.fetchone() == (0,)


def test_every_engine_statement_is_accepted_by_postgresql(catalog_dsn: str) -> None:
    """The qualified spellings (OPERATOR(pg_catalog.x) binds as any operator) still mean
    what they meant: each statement prepares against the catalog."""

    async def prepare_all() -> list[str]:
        conn = await asyncpg.connect(catalog_dsn)
        failed = []
        try:
            for name, sql in queries().items():
                if ";" in sql.rstrip().rstrip(";"):  # a multi-statement script: run by psql
                    continue
                try:
                    await conn.prepare(sql)
                except asyncpg.PostgresError as exc:
                    failed.append(f"{name}: {exc}")
        finally:
            await conn.close()
        return failed

    assert asyncio.run(prepare_all()) == []


def test_a_sibling_step_records_its_result_while_its_instance_is_being_advanced(
    admin: psycopg.Connection, catalog_dsn: str
) -> None:
    """Parallel steps of one instance each upserted the instance's one _advance row, so
    they queued behind whichever transaction was loading and planning the instance (2.3
    steps/s for a graph of 5,000 parallel leaves). A step now records without waiting, and
    the advance that was running leaves the sibling's request for the next one."""
    instance = _start(catalog_dsn, "hard_alice", "SELECT 7")
    token = uuid.uuid4()
    admin.execute(
        "INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at, lease_owner,"
        " lease_token, lease_until) SELECT %s, root_node, 'SQL', 'SELECT 7', now(),"
        " gen_random_uuid(), %s, now() + interval '1 minute' FROM df.instances WHERE id = %s",
        (instance, token, instance),
    )
    node = admin.execute("SELECT root_node FROM df.instances WHERE id = %s", (instance,))
    node_id = node.fetchone()[0]  # type: ignore[index]
    with psycopg.connect(catalog_dsn) as advancing, advancing.transaction():
        state = advancing.execute("SELECT df._load_for_advance(%s)", (instance,)).fetchone()
        assert state is not None and state[0]["advance_keys"] == [""]
        with psycopg.connect(catalog_dsn, autocommit=True) as sibling:
            sibling.execute("SET lock_timeout = '2s'")
            sibling.execute(
                'SELECT df._complete_step(%s, %s, %s, \'{"rows":[],"row_count":0}\')',
                (instance, node_id, token),
            )
        plan = {"events": 1, "execution_id": 1, "advance_keys": [""]}
        advancing.execute("SELECT df._apply_plan(%s, %s)", (instance, json.dumps(plan)))
    left = admin.execute("SELECT node_id FROM df._advance WHERE instance_id = %s", (instance,))
    assert left.fetchall() == [(node_id,)]
