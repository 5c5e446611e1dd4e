"""df.start(..., transaction_mode => 'new') (§3.3): the instance commits on its own session."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.acceptance.conftest import WORKFLOW_ROLE
from tests.support.clusters import run_psql
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status


def test_new_survives_the_callers_rollback(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        new = conn.execute(
            "SELECT df.start('SELECT 1 AS one', 'kept', transaction_mode => 'NEW')"
        ).fetchone()
        caller = conn.execute("SELECT df.start('SELECT 2', 'undone')").fetchone()
        conn.rollback()
        assert new is not None and caller is not None
        owner = conn.execute(
            "SELECT submitted_by::text, label FROM df.instances WHERE id = %s", (new[0],)
        ).fetchone()
        gone = conn.execute("SELECT count(*) FROM df.instances WHERE id = %s", (caller[0],))
        assert gone.fetchone() == (0,)
    assert owner == (WORKFLOW_ROLE, "kept")
    assert await_status(wf_dsn, new[0]) == "completed"


def test_new_from_a_do_block_and_a_plpgsql_function(wf_dsn: str) -> None:
    """Called where pgdurable cannot see the df.start (psql, then psycopg), each instance
    still starts on its own session and survives the caller's ROLLBACK."""
    label = f"tm-plpgsql-{uuid.uuid4().hex[:8]}"
    script = f"""
        CREATE OR REPLACE FUNCTION public.tm_start_new(l text) RETURNS text LANGUAGE plpgsql
        AS $f$ BEGIN RETURN df.start('SELECT 1', l, transaction_mode => 'new'); END $f$;
        BEGIN;
        DO $$ BEGIN PERFORM df.start('SELECT 1', '{label}-do', transaction_mode => 'new'); END $$;
        SELECT public.tm_start_new('{label}-fn');
        ROLLBACK;
    """
    started = run_psql(wf_dsn, script, "-At")
    assert started.stderr == ""
    with psycopg.connect(wf_dsn) as conn:
        conn.execute("SELECT public.tm_start_new(%s)", (f"{label}-psycopg",))
        conn.rollback()
        labels = conn.execute(
            "SELECT label FROM df.instances WHERE label LIKE %s ORDER BY label", (f"{label}-%",)
        ).fetchall()
    assert labels == [(f"{label}-do",), (f"{label}-fn",), (f"{label}-psycopg",)]


def test_new_sees_only_committed_variables(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        conn.execute("SELECT df.setvar('tm_probe', 'committed')")
        conn.commit()
        conn.execute("SELECT df.setvar('tm_probe', 'uncommitted')")
        row = conn.execute(
            "SELECT df.start('SELECT ''{tm_probe}'' AS v', transaction_mode => 'new')"
        ).fetchone()
        conn.rollback()
        assert row is not None
        conn.execute("SELECT df.unsetvar('tm_probe')")
        conn.commit()
    assert await_status(wf_dsn, row[0]) == "completed"
    with psycopg.connect(wf_dsn) as conn:
        result = conn.execute("SELECT df.result(%s)", (row[0],)).fetchone()
    assert result is not None and json.loads(result[0])["rows"] == [{"v": "committed"}]


def test_new_reports_a_bad_graph_and_aborts_the_caller(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
            conn.execute("""SELECT df.start('{"node_type":"NOPE"}', transaction_mode => 'new')""")
        assert str(caught.value).startswith(
            "df.start() on new transaction failed: Invalid durable function: Unknown node_type"
        )
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_new_needs_read_committed(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="READ COMMITTED"):
            conn.execute("SELECT df.start('SELECT 1', transaction_mode => 'new')")


def test_new_inside_a_workflow_fails_the_step(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT df.start('SELECT df.start(''SELECT 1'', transaction_mode => ''new'')')"
        ).fetchone()
        assert row is not None
        assert await_status(wf_dsn, row[0]) == "failed"
        error = conn.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s", (row[0],)
        ).fetchone()
    assert error is not None and "cannot be called inside a workflow" in error[0]


def test_new_needs_pgdurable(cluster: Cluster, wf_dsn: str) -> None:
    """Connected to PostgreSQL directly nobody opens the new session: a clear error."""
    with psycopg.connect(cluster.dsn(WORKFLOW_ROLE), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="through pgdurable"):
            conn.execute("SELECT df.start('SELECT 1', transaction_mode => 'new')")


def test_a_forged_request_cannot_borrow_another_role(
    cluster: Cluster, proxy: ProxyProcess, wf_dsn: str
) -> None:
    """A user raising pgdurable's notice by hand, naming a role it is not, gets refused."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS tm_victim")
        admin.execute("CREATE ROLE tm_victim LOGIN")
    request = uuid.uuid4()
    detail = json.dumps({"request": str(request), "role": "tm_victim", "fut": "SELECT 1"})
    forged = (
        "DO $$ BEGIN RAISE NOTICE USING MESSAGE = 'pgdurable:new-transaction-start', "
        f"DETAIL = '{detail}'; PERFORM pg_sleep(0.5); END $$"
    )
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute(forged)
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        answer = admin.execute(
            "SELECT error, sqlstate FROM df._new_starts WHERE request = %s", (request,)
        ).fetchone()
        owned = admin.execute(
            "SELECT count(*) FROM df.instances WHERE submitted_by = 'tm_victim'::regrole"
        ).fetchone()
    assert answer is not None and answer[1] == "42501", answer
    assert 'may not start instances as "tm_victim"' in answer[0]
    assert owned == (0,)


@pytest.fixture(scope="module")
def one_slot_proxy(
    cluster: Cluster, wf_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """pgdurable allowing one 'new' start at a time, waiting at most 1 s for it."""
    log_path = tmp_path_factory.mktemp("proxy-one-slot") / "pgdurable.log"
    args = ["--max-new-transaction-starts", "1", "--new-transaction-start-timeout", "1"]
    process = ProxyProcess(cluster.dsn(), extra_args=args, log_path=log_path).start()
    yield process
    process.stop()


def test_the_launch_limit_gives_pg_durables_message(
    cluster: Cluster, one_slot_proxy: ProxyProcess
) -> None:
    """A start blocked on a lock keeps the only slot; the next one times out waiting."""
    dsn = one_slot_proxy.dsn(WORKFLOW_ROLE)
    first: dict[str, object] = {}

    def start_first() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            first["id"] = conn.execute(
                "SELECT df.start('SELECT 1', transaction_mode => 'new')"
            ).fetchone()

    with psycopg.connect(cluster.dsn()) as locker:
        locker.execute("LOCK TABLE df.vars IN ACCESS EXCLUSIVE MODE")  # df.start reads it
        thread = threading.Thread(target=start_first)
        thread.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as watcher:
            for _ in range(200):  # until the first start's own session waits for the lock
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'pg_durable:backend:new-transaction' AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting == (1,):
                    break
                threading.Event().wait(0.05)
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.TooManyConnections) as caught:
                conn.execute("SELECT df.start('SELECT 2', transaction_mode => 'new')")
        locker.rollback()
    thread.join(30)
    assert caught.value.diag.message_primary == (
        "pg_durable: transaction_mode => 'new' launch limit reached "
        "(max_new_transaction_starts=1). Timed out after 1s waiting for a launch slot "
        "before opening the loopback session."
    )
    assert isinstance(first.get("id"), tuple)
