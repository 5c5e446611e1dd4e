"""A PostgreSQL restart mid-run fails no workflow: steps that could not connect, or whose
connection died before COMMIT, wait for PostgreSQL and run again; the log says so once."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import FLAVORS, make_cluster, remove_cluster
from tests.support.proxy import ProxyProcess
from tests.support.workflows import start_and_await

WORKFLOWS = 300
STEP = "INSERT INTO effects (instance_id, step) VALUES ('{{sys_instance_id}}', {n})"
GRAPH = " ~> ".join(f"$${STEP.format(n=n)}$$" for n in (1, 2, 3))
# a short lease, so that the test would also pass if steps were recovered only by lease
# expiry: what it checks is that none is failed
ARGS = ["--lease-seconds", "5"]
OUTAGE_LINES = 20  # log lines about the outage, whatever its length or the steps running


def _flavor() -> object:
    """PostgreSQL 15 (where the defect was seen) when installed, else the wheel's 18."""
    return FLAVORS[1] if FLAVORS[1].available else FLAVORS[0]


@pytest.fixture
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A private cluster (this test restarts it) with a table of effects, one row per step."""
    cluster = make_cluster(_flavor(), tmp_path_factory.mktemp("restart"))  # type: ignore[arg-type]
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE worker LOGIN")
        conn.execute(
            "CREATE TABLE effects (instance_id text, step int, PRIMARY KEY (instance_id, step))"
        )
        conn.execute("GRANT INSERT, SELECT ON effects TO worker")
    yield cluster
    remove_cluster(cluster)


def _effects(cluster: Cluster) -> int:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM effects").fetchone()[0])  # type: ignore[index]


def _wait_finished(cluster: Cluster, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        while True:
            rows = conn.execute("SELECT status, count(*) FROM df.instances GROUP BY 1").fetchall()
            statuses = {str(s): int(n) for s, n in rows}
            if set(statuses) <= {"completed", "failed", "cancelled"} or time.monotonic() > deadline:
                return statuses
            time.sleep(0.2)


def _failures(cluster: Cluster) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.dsn()) as conn:
        return conn.execute(
            "SELECT instance_id, result #>> '{}' FROM df.nodes WHERE status = 'failed' LIMIT 5"
        ).fetchall()


def _await_readiness(proxy: ProxyProcess, status: int, timeout: float = 10) -> dict[str, Any]:
    """/readyz's body once it answers `status`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{proxy.http_port}/readyz") as reply:
                code, body = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            code, body = error.code, error.read()
        if code == status:
            return dict(json.loads(body))
        assert time.monotonic() < deadline, f"/readyz still {code}: {body!r}"
        time.sleep(0.1)


@pytest.mark.parametrize("down", [0.0, 7.0], ids=["restart", "down-longer-than-a-lease"])
def test_postgres_restart_fails_no_workflow(
    restartable: Cluster, tmp_path: Path, down: float
) -> None:
    log = tmp_path / "pgdurable.log"
    proxy = ProxyProcess(restartable.dsn(), extra_args=ARGS, log_path=log).start()
    try:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage('worker')")
        with psycopg.connect(restartable.dsn("worker"), autocommit=True) as conn:
            for _ in range(WORKFLOWS):  # one transaction each: they start as they commit
                conn.execute(f"SELECT df.start({GRAPH})")
        deadline = time.monotonic() + 30
        while _effects(restartable) < WORKFLOWS // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _effects(restartable) < 3 * WORKFLOWS, "the run ended before the restart"
        restartable.stop("immediate")  # pg_ctl restart -m immediate, with a pause
        if down:
            started_down = time.monotonic()
            readiness = _await_readiness(proxy, 503)
            assert readiness["checks"]["postgres"].startswith("not reachable"), readiness
            time.sleep(max(0.0, down - (time.monotonic() - started_down)))
        restartable.start()
        statuses = _wait_finished(restartable, timeout=40)
        assert _await_readiness(proxy, 200)["status"] == "ready"
    finally:
        proxy.kill()
    assert statuses == {"completed": WORKFLOWS}, _failures(restartable)
    with psycopg.connect(restartable.dsn()) as conn:
        per_step = conn.execute(
            "SELECT count(*), count(DISTINCT (instance_id, step)) FROM effects"
        ).fetchone()
    assert per_step == (3 * WORKFLOWS, 3 * WORKFLOWS)  # each effect there, exactly once
    text = log.read_text()
    assert "Traceback" not in text
    outage = [
        line
        for line in text.splitlines()
        if re.search(r"level=(WARNING|ERROR)", line) and "logger=pgdurable.catalog" not in line
    ]
    assert len(outage) <= OUTAGE_LINES, "\n".join(outage[:40])
    assert "event=upstream_unavailable" in text and "event=upstream_back" in text


def test_a_step_that_ends_its_own_backend_fails_instead_of_running_forever(wf_dsn: str) -> None:
    graph = "'SELECT pg_terminate_backend(pg_backend_pid())'"
    instance, status = start_and_await(wf_dsn, graph, timeout=30)
    assert status == "failed"
    with psycopg.connect(wf_dsn) as conn:
        row = conn.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s AND status = 'failed'",
            (instance,),
        ).fetchone()
    assert row is not None
    assert "terminating connection due to administrator command" in row[0]
    assert "the step's connection was lost 5 times while it ran" in row[0]


def test_a_step_whose_connection_dies_during_commit_is_not_run_again(
    restartable: Cluster, tmp_path: Path
) -> None:
    """With a synchronous standby that never answers, a worker's COMMIT is written locally
    and then waits; ending its backend there is a connection lost *during* COMMIT, with the
    transaction committed. The task row's lease token decides: not run again."""
    with psycopg.connect(restartable.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        conn.execute("ALTER SYSTEM SET synchronous_commit = 'local'")  # all but the worker
        conn.execute("ALTER ROLE worker SET synchronous_commit = 'on'")
        conn.execute("SELECT pg_reload_conf()")
    log = tmp_path / "pgdurable.log"
    proxy = ProxyProcess(restartable.dsn(), extra_args=["--lease-seconds", "2"], log_path=log)
    proxy.start()
    try:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage('worker')")
        with psycopg.connect(restartable.dsn("worker"), autocommit=True) as conn:
            conn.execute("SET synchronous_commit = 'local'")
            row = conn.execute(f"SELECT df.start({GRAPH})").fetchone()
        assert row is not None
        with psycopg.connect(restartable.dsn(), autocommit=True) as admin:
            ended = 0
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                status = admin.execute("SELECT df.status(%s)", row).fetchone()
                if status is not None and status[0] in ("completed", "failed"):
                    break
                ended += len(
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE usename = 'worker' AND wait_event = 'SyncRep'"
                    ).fetchall()
                )
                time.sleep(0.1)
            effects = admin.execute(
                "SELECT step, count(*) FROM effects WHERE instance_id = %s GROUP BY 1 ORDER BY 1",
                row,
            ).fetchall()
    finally:
        proxy.kill()
    assert status == ("completed",)
    assert effects == [(1, 1), (2, 1), (3, 1)]  # each committed once, none run again
    assert ended >= 3  # every step's COMMIT lost its connection
    assert "event=step_settled" in log.read_text()  # decided by the task row, not re-run
