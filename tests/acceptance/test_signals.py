"""df.signal takes effect at once, independent of the caller's transaction (§3.4, as
pg_durable's does), through pgdurable; a direct session keeps the transactional signal.

A second pgdurable process fronts the same database throughout (either may store a signal,
advance the instance or both).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.acceptance.conftest import WORKFLOW_ROLE
from tests.support.clusters import run_psql
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status

OTHER_ROLE = "sig_other"


@pytest.fixture(scope="module", autouse=True)
def second_proxy(
    cluster: Cluster, wf_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """Another pgdurable process on the same database, running during these tests."""
    log_path = tmp_path_factory.mktemp("proxy-second") / "pgdurable.log"
    process = ProxyProcess(cluster.dsn(), log_path=log_path).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def other_dsn(cluster: Cluster, proxy: ProxyProcess) -> str:
    """Through pgdurable, a role with df usage that does not own wf_user's instances."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OTHER_ROLE,)).fetchone():
            return proxy.dsn(OTHER_ROLE)
        admin.execute(f"CREATE ROLE {OTHER_ROLE} LOGIN")
        admin.execute("SELECT df.grant_usage(%s)", (OTHER_ROLE,))
    return proxy.dsn(OTHER_ROLE)


def _start_waiting(dsn: str) -> str:
    """A committed instance of wf_user waiting for signal 'go' (for up to a minute)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT df.start(df.wait_for_signal('go', 60))").fetchone()
    assert row is not None
    return str(row[0])


def _received(dsn: str, instance: str) -> object:
    """The data of the signal the completed instance received."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT df.result(%s)", (instance,)).fetchone()
    assert row is not None and row[0] is not None
    result = json.loads(row[0])
    assert result["timed_out"] is False
    return result["data"]


def test_a_signal_then_a_wait_in_one_transaction_completes(wf_dsn: str) -> None:
    instance = _start_waiting(wf_dsn)
    with psycopg.connect(wf_dsn) as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute("SELECT df.signal(%s, 'go', '{\"k\": \"é\"}')", (instance,))
        status = conn.execute("SELECT df.await_instance(%s, 5)", (instance,)).fetchone()
        conn.commit()
    assert status == ("completed",)
    assert _received(wf_dsn, instance) == {"k": "é"}


def test_a_signal_survives_the_callers_rollback(wf_dsn: str) -> None:
    instance = _start_waiting(wf_dsn)
    with psycopg.connect(wf_dsn) as conn:
        conn.execute("SET client_encoding = 'LATIN1'")
        conn.execute("SELECT df.signal(%s, 'go', 'ça va')", (instance,))
        conn.rollback()
    assert await_status(wf_dsn, instance, 5) == "completed"
    assert _received(wf_dsn, instance) == "ça va"


def test_psql_a_do_block_signals_and_waits(wf_dsn: str) -> None:
    """What a psql user sees: the DO block's own notice, none of pgdurable's."""
    instance = _start_waiting(wf_dsn)
    script = (
        f"DO $$ BEGIN PERFORM df.signal('{instance}', 'go', '[1, 2]'); "
        f"RAISE NOTICE 'status: %', df.await_instance('{instance}', 5); END $$;"
    )
    done = run_psql(wf_dsn, script)
    assert done.stderr == "NOTICE:  status: completed\n"
    assert _received(wf_dsn, instance) == [1, 2]


def test_through_the_other_pgdurable_process(second_proxy: ProxyProcess, wf_dsn: str) -> None:
    instance = _start_waiting(wf_dsn)
    with psycopg.connect(second_proxy.dsn(WORKFLOW_ROLE)) as conn:
        conn.execute("SELECT df.signal(%s, 'go', '7')", (instance,))
        status = conn.execute("SELECT df.await_instance(%s, 5)", (instance,)).fetchone()
        conn.rollback()
    assert status == ("completed",)
    assert _received(wf_dsn, instance) == 7


def test_a_signal_to_an_instance_this_transaction_started_is_kept(wf_dsn: str) -> None:
    """pgdurable cannot see the instance yet: the caller's transaction stores the signal."""
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute("SELECT df.start(df.wait_for_signal('go', 60))").fetchone()
        assert row is not None
        conn.execute("SELECT df.signal(%s, 'go')", (row[0],))
        conn.commit()
    assert await_status(wf_dsn, row[0], 5) == "completed"


def test_a_caller_holding_the_instance_row_stores_the_signal_itself(wf_dsn: str) -> None:
    """pgdurable would wait for the caller's row lock: it gives up after 500 ms and says so,
    and the caller's transaction stores the signal."""
    instance = _start_waiting(wf_dsn)
    with psycopg.connect(wf_dsn) as conn:
        conn.execute("SELECT 1 FROM df.instances WHERE id = %s FOR UPDATE", (instance,))
        started = time.monotonic()
        conn.execute("SELECT df.signal(%s, 'go', '3')", (instance,))
        elapsed = time.monotonic() - started
        conn.commit()
    assert 0.5 <= elapsed < 1.5
    assert await_status(wf_dsn, instance, 5) == "completed"
    assert _received(wf_dsn, instance) == 3


def test_a_direct_session_keeps_the_transactional_signal(cluster: Cluster, wf_dsn: str) -> None:
    instance = _start_waiting(wf_dsn)
    notices: list[str] = []
    with psycopg.connect(cluster.dsn(WORKFLOW_ROLE)) as conn:
        conn.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
        conn.execute("SELECT df.signal(%s, 'go', '1')", (instance,))
        conn.rollback()
        with psycopg.connect(cluster.dsn()) as admin:
            kept = admin.execute(
                "SELECT count(*) FROM df._signals WHERE instance_id = %s", (instance,)
            ).fetchone()
        conn.execute("SELECT df.signal(%s, 'go', '2')", (instance,))
        conn.commit()
    assert kept == (0,) and notices == []
    assert await_status(wf_dsn, instance, 5) == "completed"
    assert _received(wf_dsn, instance) == 2


def _forged(request: uuid.UUID, role: str, instance: str) -> str:
    detail = {
        "request": str(request),
        "role": role,
        "instance_id": instance,
        "signal_name": "go",
        "data": "{}",
    }
    encoded = base64.b64encode(json.dumps(detail).encode()).decode()
    return (
        f"DO $$ BEGIN RAISE NOTICE USING MESSAGE = 'pgdurable:signal', DETAIL = '{encoded}'; END $$"
    )


def test_another_role_can_neither_signal_nor_forge_a_request(
    cluster: Cluster, wf_dsn: str, other_dsn: str
) -> None:
    instance = _start_waiting(wf_dsn)
    forged = {uuid.uuid4(): OTHER_ROLE, uuid.uuid4(): WORKFLOW_ROLE}
    with psycopg.connect(other_dsn, autocommit=True) as other:
        with pytest.raises(psycopg.errors.UndefinedObject) as refused:
            other.execute("SELECT df.signal(%s, 'go')", (instance,))
        for request, role in forged.items():
            other.execute(_forged(request, role, instance))
    assert refused.value.diag.message_primary == f"Instance not found or access denied: {instance}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        deadline = time.monotonic() + 5
        answers: list[tuple[object, ...]] = []
        while len(answers) < len(forged) and time.monotonic() < deadline:
            answers = admin.execute(
                "SELECT sent FROM df._signal_requests WHERE request = ANY(%s)", (list(forged),)
            ).fetchall()
            time.sleep(0.01)
        stored = admin.execute(
            "SELECT count(*) FROM df._signals WHERE instance_id = %s", (instance,)
        ).fetchone()
        admin.execute("SELECT df.cancel(%s)", (instance,))
    assert answers == [(False,), (False,)]
    assert stored == (0,)
