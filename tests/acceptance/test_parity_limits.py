"""pg_durable 0.2.8 limits and secrets, through pgdurable: execution_acquire_timeout, the
build without HTTP (--http-disable), URL secrets redacted, log_workflow_sql.

Two pgdurable processes serve the module, each on its own database: `limited` (one step
slot, a 1 s acquire timeout, HTTP off, debug logs without workflow SQL) and `logged` (HTTP
to 127.0.0.1 allowed, debug logs with --log-workflow-sql).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster, free_port
from tests.support.catalog import create_database
from tests.support.metrics import read_metrics
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status, backends_running

ROLE = "limits_user"
DISABLED_BUILDER = (
    "{}() is disabled. Rebuild with the 'http-allow-azure-domains' Cargo feature to enable "
    "outbound HTTP requests."
)
DISABLED_STEP = (
    "Blocked: outbound HTTP requests are disabled. Rebuild with the 'http-allow-azure-domains' "
    "Cargo feature to enable them."
)
SLOT_TIMED_OUT = (
    "pg_durable: connection limit reached (max_user_connections=1). Timed out after 1s "
    "waiting for an available execution slot."
)


@dataclass
class Pgdurable:
    proxy: ProxyProcess
    database: str
    log: Path

    def dsn(self, role: str = ROLE) -> str:
        return self.proxy.dsn(role, dbname=self.database)

    def log_text(self) -> str:
        return self.log.read_text()


def _serve(cluster: Cluster, log: Path, database: str, args: list[str]) -> Pgdurable:
    create_database(cluster, database)
    flags = [*args, "--log-level", "debug", "--poll-interval", "0.2"]
    proxy = ProxyProcess(cluster.dsn(dbname=database), extra_args=flags, log_path=log).start()
    with psycopg.connect(proxy.dsn(dbname=database), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s, include_http => true)", (ROLE,))
    return Pgdurable(proxy, database, log)


@pytest.fixture(scope="module")
def both(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pgdurable, Pgdurable]]:
    """`limited` and `logged`, started side by side."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN")
    logs = tmp_path_factory.mktemp("parity-limits")
    limits = ["--max-user-connections", "1", "--execution-acquire-timeout", "1", "--http-disable"]
    logging = ["--http-allow", "127.0.0.1", "--log-workflow-sql"]
    with ThreadPoolExecutor(2) as pool:
        limited = pool.submit(_serve, cluster, logs / "limited.log", "parity_limits", limits)
        logged = pool.submit(_serve, cluster, logs / "logged.log", "parity_logged", logging)
        served = (limited.result(), logged.result())
        yield served
        for stopped in [pool.submit(s.proxy.stop) for s in served]:
            stopped.result()


@pytest.fixture(scope="module")
def limited(both: tuple[Pgdurable, Pgdurable]) -> Pgdurable:
    return both[0]


@pytest.fixture(scope="module")
def logged(both: tuple[Pgdurable, Pgdurable]) -> Pgdurable:
    return both[1]


def _start(dsn: str, graph_sql: str, *params: object) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph_sql})", params).fetchone()
    assert row is not None
    return str(row[0])


def _failure(dsn: str, instance: str) -> tuple[Any, Any, Any]:
    """The failed node's result and error columns, and the instance's output."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        node = conn.execute(
            "SELECT result, error FROM df.nodes WHERE instance_id = %s AND status = 'failed' "
            "AND node_type IN ('SQL', 'HTTP')",
            (instance,),
        ).fetchone()
        info = conn.execute("SELECT output FROM df.instance_info(%s)", (instance,)).fetchone()
    assert node is not None and info is not None
    return node[0], node[1], info[0]


def _await_backend(cluster: Cluster, marker: str) -> None:
    deadline = time.monotonic() + 10
    while not backends_running(cluster.dsn(), marker):
        assert time.monotonic() < deadline, f"no backend runs {marker}"
        time.sleep(0.02)


def test_a_step_waiting_longer_than_execution_acquire_timeout_fails(
    limited: Pgdurable, cluster: Cluster
) -> None:
    # not a new instance's first step: cancelling one of those runs its statement again
    holder = _start(limited.dsn(), "'SELECT 0' ~> 'SELECT 1 AS holds_the_slot FROM pg_sleep(20)'")
    _await_backend(cluster, "holds_the_slot")
    began = time.monotonic()
    waiter = _start(limited.dsn(), "'SELECT 2 AS waits' ~> 'SELECT 3'")
    assert await_status(limited.dsn(), waiter, 10) == "failed"
    waited = time.monotonic() - began
    result, _, output = _failure(limited.dsn(), waiter)
    assert result == SLOT_TIMED_OUT and output == SLOT_TIMED_OUT
    assert 1 <= waited < 8, waited  # 1 s and the time to start: not the holder's 20 s
    with psycopg.connect(limited.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.cancel(%s)", (holder,))
        statuses = conn.execute(
            "SELECT status, count(*) FROM df.nodes WHERE instance_id = %s GROUP BY 1",
            (waiter,),
        ).fetchall()
    assert dict(statuses) == {"failed": 2, "pending": 1}, statuses  # THEN, first SQL; second
    assert await_status(limited.dsn(), holder, 10) == "cancelled"


def test_a_due_timer_waiting_for_a_slot_does_not_make_the_scheduler_spin(
    limited: Pgdurable, cluster: Cluster
) -> None:
    """The one step slot is held while a timer is due: the scheduler used to poll again at
    once, forever (thousands of passes a second); it now waits for the slot to free up."""
    holder = _start(limited.dsn(), "'SELECT 0' ~> 'SELECT 1 AS holds_a_slot FROM pg_sleep(4)'")
    _await_backend(cluster, "holds_a_slot")
    timer = _start(limited.dsn(), "df.sleep(0) ~> 'SELECT 4'")
    time.sleep(0.5)  # the timer's task is due, unclaimed: no slot is free

    def commits() -> int:
        with psycopg.connect(cluster.dsn(dbname=limited.database)) as conn:
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (limited.database,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    before = commits()
    time.sleep(1.5)
    passes = commits() - before
    assert passes < 100, f"{passes} transactions in 1.5 s while only a timer waited for a slot"
    assert await_status(limited.dsn(), timer, 15) == "completed"  # once the slot is free
    assert await_status(limited.dsn(), holder, 15) == "completed"


def test_http_off_refuses_the_builders_and_fails_http_nodes_built_from_json(
    limited: Pgdurable,
) -> None:
    with psycopg.connect(limited.dsn(), autocommit=True) as conn:
        for builder, extra in (("df.http", ""), ("df.http_multipart", ", parts => '[]'")):
            with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
                conn.execute(f"SELECT {builder}('http://127.0.0.1:1/'{extra})")
            assert refused.value.diag.message_primary == DISABLED_BUILDER.format(builder)
    config = {"url": "http://127.0.0.1:1/", "method": "GET", "timeout_seconds": 5}
    node = json.dumps({"node_type": "HTTP", "query": json.dumps(config)})
    instance = _start(limited.dsn(), "%s", node)
    assert await_status(limited.dsn(), instance, 10) == "failed"
    assert _failure(limited.dsn(), instance)[0] == DISABLED_STEP


def test_url_secrets_are_redacted_in_logs_errors_and_outputs(logged: Pgdurable) -> None:
    port = free_port()  # nothing listens there: the request fails
    url = f"http://user:pw-0e1f@127.0.0.1:{port}/p?token=tok-0e1f&plain=1#frag-0e1f"
    shown = f"http://REDACTED@127.0.0.1:{port}/p?token=REDACTED&plain=REDACTED#REDACTED"
    instance = _start(logged.dsn(), "df.http(%s, 'GET')", url)
    assert await_status(logged.dsn(), instance, 10) == "failed"
    result, error, output = _failure(logged.dsn(), instance)
    assert result.startswith(f"HTTP connection failed: {shown} - "), result
    texts = {"result": result, "error": error or "", "output": output}
    deadline = time.monotonic() + 5
    while f"event=step_failed instance={instance}" not in logged.log_text():
        assert time.monotonic() < deadline, "the failure was not logged"
        time.sleep(0.02)
    texts["log"] = logged.log_text()
    assert f"url={shown}" in texts["log"]  # the debug line of the request
    for where, text in texts.items():
        for secret in ("pw-0e1f", "tok-0e1f", "frag-0e1f"):
            assert secret not in text, (where, secret)


def test_workflow_sql_is_logged_only_with_log_workflow_sql(
    limited: Pgdurable, logged: Pgdurable
) -> None:
    literal = f"sql-secret-{uuid.uuid4().hex[:8]}"
    for served in (limited, logged):
        instance = _start(served.dsn(), f"'SELECT ''{literal}'' AS s'")
        assert await_status(served.dsn(), instance, 10) == "completed"
    assert literal not in limited.log_text()  # at debug level, without the flag
    logged_line = f"event=workflow_sql instance={instance} "
    deadline = time.monotonic() + 5
    while logged_line not in logged.log_text():
        assert time.monotonic() < deadline, "the step's SQL was not logged"
        time.sleep(0.02)
    assert literal in logged.log_text()


def test_a_step_cancelled_while_it_waits_for_a_slot_never_runs(
    limited: Pgdurable, cluster: Cluster
) -> None:
    """Its instance cancelled before a slot came free, the step ran its SQL all the same
    (only its record was refused): a sequence, which no rollback undoes, tells. The step is
    a new instance's first: df._first_still_due, sent ahead of its statement once it has
    the slot, fails its transaction first."""
    admin_dsn = cluster.dsn(dbname=limited.database)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE IF NOT EXISTS waited_seq")
        conn.execute(f"GRANT USAGE ON SEQUENCE waited_seq TO {ROLE}")
        before = conn.execute("SELECT last_value, is_called FROM waited_seq").fetchone()
    holder = _start(limited.dsn(), "'SELECT 0' ~> 'SELECT 1 AS holds_briefly FROM pg_sleep(0.8)'")
    _await_backend(cluster, "holds_briefly")
    waiter = _start(limited.dsn(), "'SELECT nextval(''waited_seq'')'")  # its first step waits
    deadline = time.monotonic() + 5
    while read_metrics(limited.proxy.http_port)["steps_waiting_for_slot"] < 1:
        assert time.monotonic() < deadline, "the first step never waited for the slot"
        time.sleep(0.01)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT df.cancel(%s)", (waiter,))
    assert await_status(limited.dsn(), holder, 10) == "completed"
    assert await_status(limited.dsn(), waiter, 10) == "cancelled"
    time.sleep(0.3)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        after = conn.execute("SELECT last_value, is_called FROM waited_seq").fetchone()
    assert after == before, "the cancelled step ran its SQL"
