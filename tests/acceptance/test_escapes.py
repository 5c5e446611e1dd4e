"""Nobody escapes their role: each test tries, on a trust cluster (the engine logs in as the
owner) and on a password-only cluster (it logs in through the owner's runner role), and
asserts what it got: a privilege error or zero rows."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import Flavor
from tests.support.managed import ROOT, ManagedCluster, user_password
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_running, await_status, start_and_await

ALICE, BOB = "esc_alice", "esc_bob"
RUNNER = f"df_run_{ALICE}"
ESCAPE_FUNCTION = """
CREATE OR REPLACE FUNCTION public.{name}(cmd text) RETURNS text LANGUAGE plpgsql {definer} AS $f$
DECLARE
    got text;
BEGIN
    EXECUTE cmd;
    BEGIN
        SELECT secret INTO got FROM public.esc_vault;
        RETURN 'ESCAPED as ' || current_user || ': ' || got;
    EXCEPTION WHEN insufficient_privilege THEN
        RETURN 'contained: ' || current_user;
    END;
END $f$"""


@dataclass
class Realm:
    """One cluster + pgdurable pair, and how to log in to either."""

    name: str
    proxy: ProxyProcess
    direct: Callable[[str], str]  # user -> DSN straight to PostgreSQL
    password: Callable[[str], str]
    superuser: str
    create_user: Callable[[str], None]

    def via(self, user: str) -> str:
        """DSN through pgdurable."""
        return self.proxy.dsn(user, self.password(user))


def _trust_realm(request: pytest.FixtureRequest) -> Realm:
    cluster: Cluster = request.getfixturevalue("cluster")

    def create_user(name: str) -> None:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(f"CREATE ROLE {name} LOGIN")

    return Realm(
        "trust",
        request.getfixturevalue("proxy"),
        lambda user: cluster.dsn(user),
        lambda user: "",
        "postgres",
        create_user,
    )


def _scram_realm(request: pytest.FixtureRequest) -> Realm:
    managed: ManagedCluster = request.getfixturevalue("managed")
    return Realm(
        "scram",
        request.getfixturevalue("managed_proxy"),
        managed.dsn,
        user_password,
        ROOT,
        managed.create_user,
    )


@pytest.fixture(scope="module", params=["trust", "scram"])
def realm(request: pytest.FixtureRequest, flavor: Flavor) -> Iterator[Realm]:
    """Alice and Bob, granted df usage; a vault table only the admin can read (per flavor)."""
    realm = (_trust_realm if request.param == "trust" else _scram_realm)(request)
    for user in (ALICE, BOB):
        realm.create_user(user)
    with psycopg.connect(realm.via("postgres"), autocommit=True) as admin:
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {ALICE}")
        admin.execute("CREATE TABLE IF NOT EXISTS public.esc_vault (secret text)")
        admin.execute("TRUNCATE public.esc_vault")
        admin.execute("INSERT INTO public.esc_vault VALUES ('the admin''s secret')")
        for user in (ALICE, BOB):
            admin.execute("SELECT df.grant_usage(%s)", (user,))
    with psycopg.connect(realm.direct(ALICE), autocommit=True) as alice:
        alice.execute(ESCAPE_FUNCTION.format(name="esc_try", definer=""))
        alice.execute(ESCAPE_FUNCTION.format(name="esc_try_definer", definer="SECURITY DEFINER"))
    yield realm


def _run(realm: Realm, user: str, graph_sql: str, *params: str) -> tuple[str, str]:
    """Start a workflow as `user` through pgdurable; (instance status, last SQL node text)."""
    instance, status = start_and_await(realm.via(user), graph_sql, *params, timeout=30)
    with psycopg.connect(realm.via(user)) as conn:
        text = conn.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s AND node_type = 'SQL' "
            "ORDER BY updated_at DESC, id LIMIT 1",
            (instance,),
        ).fetchone()
    assert text is not None
    return status, str(text[0])


ROLE_CHANGES = [
    "RESET ROLE",
    "SET ROLE NONE",
    "SET ROLE postgres",
    f"SET ROLE {BOB}",
    "SET SESSION AUTHORIZATION postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT set_config('session_authorization', 'postgres', false)",
    "RESET SESSION AUTHORIZATION",
]


@pytest.mark.parametrize("command", ROLE_CHANGES)
def test_a_step_cannot_change_its_role_beyond_the_owner(realm: Realm, command: str) -> None:
    status, got = _run(
        realm, ALICE, "'SELECT public.esc_try(' || quote_literal(%s) || ')'", command
    )
    if status == "failed":  # the change itself was refused
        assert "permission denied" in got or "must be superuser" in got, got
    else:
        assert status == "completed", got
        assert "contained: " in got and "ESCAPED" not in got, got
        assert any(f"contained: {who}" in got for who in (ALICE, RUNNER)), got


@pytest.mark.parametrize("command", ["RESET ROLE", f"SET ROLE {ALICE}", "SET ROLE NONE"])
def test_a_security_definer_function_cannot_change_role(realm: Realm, command: str) -> None:
    graph = "'SELECT public.esc_try_definer(' || quote_literal(%s) || ')'"
    status, got = _run(realm, ALICE, graph, command)
    assert status == "failed", got
    assert "cannot set parameter" in got and "within security-definer function" in got, got


@pytest.mark.parametrize("command", ["RESET ROLE", "SET ROLE NONE"])
def test_the_next_step_runs_as_the_owner_again(realm: Realm, command: str) -> None:
    """A step that left its role changed does not hand that session on to the next step."""
    graph = "%s::text ~> 'SELECT current_user::text AS u, session_user::text AS s'"
    status, got = _run(realm, ALICE, graph, command)
    assert status == "completed", got
    assert f'"u": "{ALICE}"' in got, got
    assert f'"s": "{RUNNER if realm.name == "scram" else ALICE}"' in got, got


def test_a_step_cannot_read_what_the_owner_cannot(realm: Realm) -> None:
    status, got = _run(realm, ALICE, "'SELECT secret FROM public.esc_vault'")
    assert status == "failed" and "permission denied for table esc_vault" in got, got


@pytest.fixture
def bobs_instance(realm: Realm) -> Iterator[str]:
    """A long-running workflow of Bob's, and a variable of his."""
    with psycopg.connect(realm.via(BOB), autocommit=True) as bob:
        bob.execute("SELECT df.setvar('esc_bob_var', 'bob-only')")
        row = bob.execute("SELECT df.start('SELECT pg_sleep(60)', 'bob')").fetchone()
        assert row is not None
        await_running(bob, str(row[0]))
        yield str(row[0])
        bob.execute("SELECT df.cancel(%s)", (row[0],))


READS_OF_BOBS = {
    "instances": "SELECT count(*) FROM df.instances WHERE id = %(id)s",
    "nodes": "SELECT count(*) FROM df.nodes WHERE instance_id = %(id)s",
    "vars": "SELECT count(*) FROM df.vars WHERE owner = %(bob)s::regrole",
    "status": "SELECT count(*) FROM df.status(%(id)s) s WHERE s IS NOT NULL",
    "result": "SELECT count(*) FROM df.result(%(id)s) r WHERE r IS NOT NULL",
    "instance_nodes": "SELECT count(*) FROM df.instance_nodes(%(id)s)",
    "executions": "SELECT count(*) FROM df.instance_executions(%(id)s)",
    "list": "SELECT count(*) FROM df.list_instances(NULL, 1000) l WHERE l.instance_id = %(id)s",
    "update instance": "WITH u AS (UPDATE df.instances SET status = 'cancelled' "
    "WHERE id = %(id)s RETURNING 1) SELECT count(*) FROM u",
    "update var": "WITH u AS (UPDATE df.vars SET value = 'x' "
    "WHERE owner = %(bob)s::regrole RETURNING 1) SELECT count(*) FROM u",
    "delete var": "WITH d AS (DELETE FROM df.vars WHERE owner = %(bob)s::regrole RETURNING 1) "
    "SELECT count(*) FROM d",
}


@pytest.mark.parametrize("what", list(READS_OF_BOBS))
def test_alice_sees_and_changes_none_of_bobs_rows(
    realm: Realm, bobs_instance: str, what: str
) -> None:
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        try:
            got = alice.execute(READS_OF_BOBS[what], {"id": bobs_instance, "bob": BOB}).fetchone()
        except psycopg.errors.InsufficientPrivilege as exc:
            got = ("privilege error", str(exc))
    assert got in ((0,), ("privilege error", got[-1])), got
    with psycopg.connect(realm.via(BOB), autocommit=True) as bob:
        assert bob.execute("SELECT df.status(%s)", (bobs_instance,)).fetchone() == ("running",)
        value = bob.execute("SELECT df.getvar('esc_bob_var')").fetchone()
        assert value == ("bob-only",)


@pytest.mark.parametrize(
    "call",
    [
        "SELECT df.cancel(%s)",
        "SELECT df.signal(%s, 'go', '{}')",
        "DELETE FROM df.instances WHERE id = %s",
    ],
)
def test_alice_cannot_cancel_signal_or_inspect_bobs_instance(
    realm: Realm, bobs_instance: str, call: str
) -> None:
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        with pytest.raises(psycopg.Error) as caught:
            alice.execute(call, (bobs_instance,))
    message = str(caught.value)
    assert (
        f"Instance not found or access denied: {bobs_instance}" in message
        or "permission denied" in message
        or "not found" in message.lower()
    ), message
    with psycopg.connect(realm.via(BOB), autocommit=True) as bob:
        assert bob.execute("SELECT df.status(%s)", (bobs_instance,)).fetchone() == ("running",)


def test_explain_of_bobs_instance_shows_nothing_of_it(realm: Realm, bobs_instance: str) -> None:
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        row = alice.execute("SELECT df.explain(%s)", (bobs_instance,)).fetchone()
    assert row is not None and "pg_sleep" not in row[0] and "running" not in row[0], row


RECORDERS = [
    'SELECT df._complete_step(%(id)s, %(node)s, %(token)s, \'{"rows":[],"row_count":0}\')',
    "SELECT df._complete_and_load(%(id)s, %(node)s, %(token)s, '{}', 'exactly-once')",
    # a plan that would finish the instance, at the version its first advance leaves
    "SELECT df._complete_held(%(id)s, %(node)s, %(token)s, '{}', 1, "
    '\'{"instance_status": "completed", "events": 9, "execution_id": 1}\')',
    "SELECT df._fail_step(%(id)s, %(node)s, %(token)s, 'forged', NULL)",
    # the engine's first-transaction functions, with a guessed engine key
    "SELECT df._apply_first(%(id)s, %(token)s, '0', "
    '\'[{"instance_status": "completed", "events": 9, "execution_id": 1}]\')',
    "SELECT df._apply_as_step(%(id)s, %(node)s, %(token)s, '{}')",
    "SELECT df._apply_plan(%(id)s, '{}')",
]


@pytest.mark.parametrize("owner", [ALICE, BOB])
@pytest.mark.parametrize("call", RECORDERS)
def test_nobody_can_record_a_step_result_but_pgdurable(
    realm: Realm, bobs_instance: str, owner: str, call: str
) -> None:
    """Forging the result of a running step (Bob's, or Alice's own) is refused."""
    instance = bobs_instance
    if owner == ALICE:
        with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
            row = alice.execute("SELECT df.start('SELECT pg_sleep(60)')").fetchone()
            assert row is not None
            instance = str(row[0])
    with psycopg.connect(realm.direct(realm.superuser)) as root:  # bypasses RLS
        node = root.execute(
            "SELECT id FROM df.nodes WHERE instance_id = %s AND node_type = 'SQL'", (instance,)
        ).fetchone()
    assert node is not None
    args = {"id": instance, "node": node[0], "token": uuid.uuid4()}
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        with pytest.raises(psycopg.Error) as caught:
            alice.execute(call, args)
        assert isinstance(
            caught.value,
            psycopg.errors.InsufficientPrivilege | psycopg.errors.SerializationFailure,
        ), caught.value
        if owner == ALICE:
            alice.execute("SELECT df.cancel(%s)", (instance,))
    with psycopg.connect(realm.via(owner), autocommit=True) as conn:
        status = conn.execute(
            "SELECT status FROM df.nodes WHERE instance_id = %s AND id = %s", (instance, node[0])
        ).fetchone()
    assert status in (("running",), ("pending",), ("cancelled",)), status


def test_a_superuser_cannot_own_a_workflow(realm: Realm) -> None:
    with psycopg.connect(realm.via(realm.superuser), autocommit=True) as root:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="superuser instances"):
            root.execute("SELECT df.start('SELECT 1')")
        root.execute(
            "CREATE OR REPLACE FUNCTION public.esc_root_start() RETURNS text "
            "LANGUAGE sql SECURITY DEFINER AS $$ SELECT df.start('SELECT 1') $$"
        )
        root.execute(f"GRANT EXECUTE ON FUNCTION public.esc_root_start() TO {ALICE}")
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="superuser instances"):
            alice.execute("SELECT public.esc_root_start()")


def test_every_catalog_relation_a_user_can_touch_is_row_secured(realm: Realm) -> None:
    """Tables users were granted have RLS; the one view is security_invoker; the rest is
    _duroxide's readiness sentinel, which holds no user data."""
    with psycopg.connect(realm.direct(realm.superuser)) as root:
        open_relations = root.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('df', '_duroxide') AND c.relkind IN ('r', 'v', 'p', 'm', 'S') "
            "AND has_table_privilege(%s, c.oid, 'SELECT,INSERT,UPDATE,DELETE') "
            "AND NOT c.relrowsecurity "
            "AND NOT coalesce(c.reloptions @> '{security_invoker=true}', false) ORDER BY 1",
            (ALICE,),
        ).fetchall()
    assert open_relations == [("_duroxide._worker_ready",)]


# Each checks who is acting (df._acting_owner: the login role must be a member of the
# instance's owner) or needs a secret only pgdurable holds (a lease token, an apply grant, a
# random request id). A new SECURITY DEFINER function users can call must be reviewed here.
REVIEWED_DEFINERS = [
    "df._acting_owner(text)",
    "df._apply_as_step(text,text,uuid,jsonb)",
    "df._apply_first(text,uuid,text,jsonb)",
    "df._apply_first_or_refuse(text,uuid,text,jsonb)",
    "df._claim_signal(uuid)",
    "df._complete_and_load(text,text,uuid,text,text)",
    "df._complete_held(text,text,uuid,text,bigint,jsonb)",
    "df._complete_held_or_record(text,text,uuid,text,bigint,jsonb)",
    "df._complete_step(text,text,uuid,text,text)",
    "df._delete_vars(regrole,text)",
    "df._first_still_due(text,uuid,text)",  # the engine's key, as df._apply_first_or_refuse
    "df._instance_waits(text[])",  # answers only for owners the session user is a member of
    "df._leased_or_refuse(text,text,uuid)",  # a lease token
    "df._new_start_outcome(uuid)",
    "df._request_advance(text)",
    "df._require_engine()",  # tells only whether an engine is ready (as _worker_ready does)
    "df._resume_failed(text)",  # owner-only (df._acting_owner), as df.resume itself
    "df._send_signal(text,text,jsonb)",
    "df._setting(text,text)",
    "df._signal_answer(uuid)",
    "df._submit(text,integer,interval,text)",
]


def test_security_definer_functions_users_can_call_are_the_reviewed_ones(realm: Realm) -> None:
    with psycopg.connect(realm.direct(realm.superuser)) as root:
        callable_definers = root.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname IN ('df', '_duroxide', 'public') AND p.prosecdef "
            "AND p.proname NOT LIKE 'esc%%' "
            "AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1",
            (ALICE,),
        ).fetchall()
    assert [name for (name,) in callable_definers] == REVIEWED_DEFINERS


# Alice's first step hooks `jsonb` for the rest of its transaction: a domain in pg_temp whose
# CHECK saves every value cast to it, and a search_path that finds it first. The engine's
# bookkeeping then ran on her session with `$n::jsonb` parameters: the plans it applied, with
# the next steps' lease tokens, went through her function into her table.
JSONB_HOOK = """DO $d$ BEGIN
  CREATE FUNCTION pg_temp.esc_grab(v pg_catalog.jsonb) RETURNS boolean LANGUAGE sql
    AS $f$ INSERT INTO public.esc_loot VALUES (v::pg_catalog.text) RETURNING true $f$;
  CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (pg_temp.esc_grab(VALUE));
  PERFORM pg_catalog.set_config('search_path', 'pg_temp, pg_catalog, public', false);
END $d$"""


def test_a_pg_temp_jsonb_domain_never_sees_the_engines_plans(realm: Realm) -> None:
    with psycopg.connect(realm.direct(ALICE), autocommit=True) as alice:
        alice.execute("CREATE TABLE IF NOT EXISTS public.esc_loot (v text)")
        alice.execute("TRUNCATE public.esc_loot")
    _, status = start_and_await(
        realm.via(ALICE), "%s ~> 'SELECT 2' ~> 'SELECT 3'", JSONB_HOOK, timeout=30
    )
    assert status == "completed"
    with psycopg.connect(realm.direct(ALICE), autocommit=True) as alice:
        loot = alice.execute("SELECT v FROM public.esc_loot").fetchall()
    assert loot == [], f"the engine's plans went through alice's domain: {loot[:1]}"


def test_a_forged_df_wake_does_not_make_the_engine_log_in_as_the_role_it_names(
    realm: Realm,
) -> None:
    """Any role may NOTIFY df_wake: a payload naming an instance and an owner made the engine
    log in as that owner (2,000 forged notifications: sessions as postgres, failed logins)."""
    ghost = f"esc_ghost_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        for _ in range(20):
            alice.execute(f"""NOTIFY df_wake, '["0badf00d", "{ghost}"]'""")
        with alice.transaction():  # her own new instance, named as the superuser's
            row = alice.execute("SELECT df.start('SELECT current_user::text AS u')").fetchone()
            assert row is not None
            alice.execute(f"""NOTIFY df_wake, '["{row[0]}", "{realm.superuser}"]'""")
    assert await_status(realm.via(ALICE), str(row[0]), 30) == "completed"
    with psycopg.connect(realm.via(ALICE)) as alice:
        result = alice.execute("SELECT df.result(%s)", (row[0],)).fetchone()
    assert result is not None and ALICE in str(result[0]), result
    log = realm.proxy.log_path
    assert log is not None and ghost not in log.read_text()


def _node_and_token(realm: Realm, instance: str) -> tuple[str, uuid.UUID]:
    """The running SQL step of `instance` and its lease token, as a hook would capture it."""
    with psycopg.connect(realm.direct(realm.superuser)) as root:
        for _ in range(200):
            row = root.execute(
                "SELECT node_id, lease_token FROM df._tasks WHERE instance_id = %s "
                "AND lease_token IS NOT NULL",
                (instance,),
            ).fetchone()
            if row is not None:
                return str(row[0]), row[1]
            time.sleep(0.02)
    raise AssertionError(f"no leased task for {instance}")


def test_an_apply_secret_from_ones_own_step_does_not_advance_another_owners_instance(
    realm: Realm, bobs_instance: str
) -> None:
    """The escape's last link: with a lease token of her own running step, alice obtained
    an apply secret and applied a plan (a task carrying her SQL) to bob's instance, and the
    engine ran it as bob. The secret is now bound to her instance and node."""
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        row = alice.execute("SELECT df.start('SELECT pg_sleep(60)')").fetchone()
    assert row is not None
    mine = str(row[0])
    node, token = _node_and_token(realm, mine)
    injected = json.dumps(
        {
            "tasks": [{"node_id": "esc00001", "node_type": "SQL", "payload": "SELECT 1"}],
            "execution_id": 1,
            "events": 1,
        }
    )
    with psycopg.connect(realm.direct(ALICE)) as alice:
        state = alice.execute(
            'SELECT df._complete_and_load(%s, %s, %s, \'{"rows":[],"row_count":0}\','
            " 'exactly-once')::jsonb ->> 'apply_secret'",
            (mine, node, token),
        ).fetchone()
        assert state is not None and state[0] is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            alice.execute(
                "SELECT df._apply_as_step(%s, %s, %s, %s)",
                (bobs_instance, node, state[0], injected),
            )
        alice.rollback()
    with psycopg.connect(realm.via(ALICE), autocommit=True) as alice:
        alice.execute("SELECT df.cancel(%s)", (mine,))
    with psycopg.connect(realm.direct(realm.superuser)) as root:
        planted = root.execute(
            "SELECT count(*) FROM df._tasks WHERE instance_id = %s AND node_id = 'esc00001'",
            (bobs_instance,),
        ).fetchone()
    assert planted == (0,)


def test_a_session_that_is_only_a_member_of_the_owner_cannot_take_a_first_step(
    realm: Realm,
) -> None:
    """A forged df_wake named a superuser as the owner of alice's new instance: the engine
    logged in as it, and the first-step functions accepted the session (a superuser is a
    member of every role), so her first step would have run as the superuser. They now
    want a session logged in as the owner (or the owner's runner)."""
    instance, status = start_and_await(realm.via(ALICE), "'SELECT 1'")
    assert status == "completed"
    with psycopg.connect(realm.direct(realm.superuser)) as root:
        key = root.execute("SELECT epoch_id FROM df._worker_epoch LIMIT 1").fetchone()
        assert key is not None
        acting = root.execute("SELECT df._engine_acting_for(%s, %s)", (instance, key[0])).fetchone()
    assert acting == (False,)  # (the owner's own sessions pass it: every first step)
