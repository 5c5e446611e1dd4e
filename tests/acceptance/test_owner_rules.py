"""Whom a workflow's steps run as (pg_durable 0.2.8): the owner is fixed when the instance is
first loaded and the superuser rule is checked before every step, even while a second
pgdurable serves the database; df.start inside a SECURITY DEFINER function makes the
definer the owner; step connections follow the role, not its name, and leave a database
once idle."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_running, await_status

ALICE, DEFINER, CALLER, PHOENIX = "own_alice", "own_definer", "own_caller", "own_phoenix"
TARGET_DATABASE = "own_target"
# The second pgdurable: short leases and polls, so that it claims its share at once.
SECOND_ARGS = ["--lease-seconds", "2", "--poll-interval", "0.2"]
WHO = (
    "'SELECT current_user::text AS who, "
    "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super'"
)


def _create_role(cluster: Cluster, name: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(f"CREATE ROLE {name} LOGIN")


@pytest.fixture(scope="module")
def owners(proxy: ProxyProcess, cluster: Cluster) -> ProxyProcess:
    """The roles of this module, granted df usage (through the session's pgdurable)."""
    for role in (ALICE, DEFINER, CALLER):
        _create_role(cluster, role)
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {DEFINER}")
    with psycopg.connect(proxy.dsn(), autocommit=True) as admin:
        for role in (ALICE, DEFINER, CALLER):
            admin.execute("SELECT df.grant_usage(%s)", (role,))
    return proxy


@pytest.fixture(scope="module")
def second(
    owners: ProxyProcess, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """A second pgdurable on the same database as the session's: either may claim a step."""
    log_path = tmp_path_factory.mktemp("owner-second") / "pgdurable.log"
    process = ProxyProcess(cluster.dsn(), extra_args=SECOND_ARGS, log_path=log_path).start()
    yield process
    process.stop()


def _start(dsn: str, graph_sql: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph_sql})").fetchone()
    assert row is not None
    return str(row[0])


def _last_sql_result(cluster: Cluster, instance: str) -> str | None:
    """The result (or error) text of the instance's SQL node updated last."""
    with psycopg.connect(cluster.dsn()) as admin:
        row = admin.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s AND node_type = 'SQL' "
            "AND status IN ('completed', 'failed') ORDER BY updated_at DESC, id LIMIT 1",
            (instance,),
        ).fetchone()
    return None if row is None else row[0]


def _wait_for(cluster: Cluster, sql: str, *params: object, timeout: float = 10) -> None:
    """Wait until the admin's `sql` returns true."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        while admin.execute(sql, params).fetchone() != (True,):
            assert time.monotonic() < deadline, sql
            time.sleep(0.02)


# -- item 8: step connections follow the role, not its name ------------------------------------
# (first in the module: the session's pgdurable alone serves the database, so the second
# instance would be given the pooled connection of the first one's role if it were keyed by
# the role's name)


def test_a_role_dropped_and_created_again_is_another_owner(
    owners: ProxyProcess, cluster: Cluster
) -> None:
    """Steps of a role created again under a dropped role's name get a connection of their
    own, and the dropped role's waiting instance does not run as the new role."""
    _create_role(cluster, PHOENIX)
    with psycopg.connect(owners.dsn(), autocommit=True) as admin:
        admin.execute("SELECT df.grant_usage(%s)", (PHOENIX,))
    dsn = owners.dsn(PHOENIX)
    first = _start(dsn, WHO)
    assert await_status(dsn, first) == "completed"
    waiting = _start(dsn, f"df.wait_for_signal('go') ~> {WHO}")
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        old_oid = admin.execute("SELECT %s::regrole::oid", (PHOENIX,)).fetchone()
        assert old_oid is not None
        with psycopg.connect(owners.dsn(), autocommit=True) as via:
            via.execute("SELECT df.revoke_usage(%s)", (PHOENIX,))
        admin.execute(f"DROP ROLE {PHOENIX}")
        admin.execute(f"CREATE ROLE {PHOENIX} LOGIN")
        with psycopg.connect(owners.dsn(), autocommit=True) as via:
            via.execute("SELECT df.grant_usage(%s)", (PHOENIX,))
        # the dropped role's pooled session is still there to be (wrongly) reused
        pooled = admin.execute(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE usesysid = %s", (old_oid[0],)
        ).fetchone()
        assert pooled == (True,)
    again = _start(dsn, WHO)
    assert await_status(dsn, again) == "completed", _last_sql_result(cluster, again)
    result = json.loads(_last_sql_result(cluster, again) or "{}")
    assert result["rows"] == [{"who": PHOENIX, "super": False}], result
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("SELECT df.signal(%s, 'go')", (waiting,))
    assert await_status(cluster.dsn(), waiting) == "failed"
    assert _last_sql_result(cluster, waiting) == (
        f"Instance {waiting}: submitted_by role no longer exists in pg_roles"
    )


def test_a_target_database_can_be_dropped_once_its_workflows_finished(
    owners: ProxyProcess, cluster: Cluster
) -> None:
    """Idle step connections close (--step-idle-timeout; the tests run with 1 s): DROP
    DATABASE, which waits up to 5 s for other sessions to leave, then succeeds."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TARGET_DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TARGET_DATABASE}")
    dsn = owners.dsn(ALICE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT df.start('SELECT current_database()::text AS db', database => %s)",
            (TARGET_DATABASE,),
        ).fetchone()
    assert row is not None
    assert await_status(dsn, str(row[0])) == "completed"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {TARGET_DATABASE}")  # not WITH (FORCE)


# -- item 6: the owner fixed at first load, the superuser rule before every step -------------


def test_a_rewritten_submitted_by_does_not_change_whom_the_steps_run_as(
    second: ProxyProcess, owners: ProxyProcess, cluster: Cluster
) -> None:
    """An administrator rewrites running instances' submitted_by to a superuser: their next
    steps still run as the owner they were first loaded with, whichever pgdurable runs them."""
    dsn = owners.dsn(ALICE)
    instances = [_start(dsn, f"'SELECT 1' ~> df.wait_for_signal('go') ~> {WHO}") for _ in range(4)]
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for instance in instances:
            with psycopg.connect(dsn, autocommit=True) as alice:
                await_running(alice, instance)
            with admin.transaction():
                for table, key in (("df.nodes", "instance_id"), ("df.instances", "id")):
                    admin.execute(
                        f"UPDATE {table} SET submitted_by = 'postgres' WHERE {key} = %s",
                        (instance,),
                    )
            admin.execute("SELECT df.signal(%s, 'go')", (instance,))
    for instance in instances:
        assert await_status(cluster.dsn(), instance) == "completed"
        result = json.loads(_last_sql_result(cluster, instance) or "{}")
        assert result["rows"] == [{"who": ALICE, "super": False}], result


def test_an_owner_made_superuser_is_refused_before_its_next_step(
    second: ProxyProcess, owners: ProxyProcess, cluster: Cluster
) -> None:
    """ALTER ROLE ... SUPERUSER while two instances run: the step after a signal, and the
    step whose transaction the previous step's COMMIT began (chained), both fail with
    pg_durable's text before they run."""
    dsn = owners.dsn(ALICE)
    table = f"own_ran_{uuid.uuid4().hex[:8]}"
    lock = 7_100_000 + uuid.uuid4().int % 100_000
    mark = f"'INSERT INTO public.{table} VALUES (''{{sys_instance_id}}'')'"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE TABLE public.{table} (instance text)")
        admin.execute(f"GRANT INSERT ON public.{table} TO {ALICE}")
        admin.execute("SELECT pg_advisory_lock(%s)", (lock,))
        signalled = _start(dsn, f"'SELECT 1' ~> df.wait_for_signal('go') ~> {mark}")
        chained = _start(
            dsn, f"'SELECT 1' ~> 'SELECT pg_advisory_xact_lock_shared({lock})' ~> {mark}"
        )
        try:
            with psycopg.connect(dsn, autocommit=True) as alice:
                await_running(alice, signalled)
            _wait_for(
                cluster,
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND objid = %s AND NOT granted)",
                lock,
            )
            admin.execute(f"ALTER ROLE {ALICE} SUPERUSER")
            admin.execute("SELECT df.signal(%s, 'go')", (signalled,))
            admin.execute("SELECT pg_advisory_unlock(%s)", (lock,))
            statuses = [await_status(cluster.dsn(), i) for i in (signalled, chained)]
        finally:
            admin.execute(f"ALTER ROLE {ALICE} NOSUPERUSER")
        assert statuses == ["failed", "failed"]
        for instance in (signalled, chained):
            assert _last_sql_result(cluster, instance) == (
                f'pg_durable blocked instance {instance}: submitted_by role "{ALICE}" is a '
                "superuser, but pg_durable.enable_superuser_instances is off"
            )
        assert admin.execute(f"SELECT count(*) FROM public.{table}").fetchone() == (0,)
        admin.execute(f"DROP TABLE public.{table}")


# -- item 7: df.start inside a SECURITY DEFINER function -------------------------------------


def test_a_security_definer_start_makes_the_definer_the_owner(
    second: ProxyProcess, owners: ProxyProcess, cluster: Cluster
) -> None:
    """As pg_durable: the definer (current_user) owns the workflow and its steps run as
    the definer; the caller cannot hand the engine an instance its transaction did not
    write, nor write one for another owner."""
    with psycopg.connect(cluster.dsn(DEFINER), autocommit=True) as definer:
        definer.execute(
            "CREATE OR REPLACE FUNCTION public.own_definer_start() RETURNS text "
            f"LANGUAGE sql SECURITY DEFINER AS $$ SELECT df.start({WHO}) $$"
        )
        definer.execute("REVOKE EXECUTE ON FUNCTION public.own_definer_start() FROM PUBLIC")
        definer.execute(f"GRANT EXECUTE ON FUNCTION public.own_definer_start() TO {CALLER}")
    with psycopg.connect(owners.dsn(CALLER)) as caller:
        with caller.transaction(), caller.transaction():  # in a savepoint, too
            row = caller.execute("SELECT public.own_definer_start()").fetchone()
    assert row is not None
    instance = str(row[0])
    definer_dsn = owners.dsn(DEFINER)
    assert await_status(definer_dsn, instance) == "completed"
    result = json.loads(_last_sql_result(cluster, instance) or "{}")
    assert result["rows"] == [{"who": DEFINER, "super": False}], result
    with psycopg.connect(cluster.dsn()) as admin:
        owner = admin.execute(
            "SELECT submitted_by::text FROM df.instances WHERE id = %s", (instance,)
        )
        assert owner.fetchone() == (DEFINER,)

    with psycopg.connect(owners.dsn(CALLER), autocommit=True) as caller:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="access denied"):
            caller.execute("SELECT df._submit(%s)", (instance,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            caller.execute(
                "INSERT INTO df.instances (id, root_node, submitted_by) "
                "VALUES ('0a0b0c0d', '0a0b0c0d', %s)",
                (DEFINER,),
            )
