"""Durable means durable: SIGKILL pgdurable (and crash PostgreSQL) mid-run, with a step
that fails now and then and is retried; nothing is lost or done twice, and no failed
attempt leaves a trace."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import FLAVORS, make_cluster, remove_cluster
from tests.support.managed import make_managed_cluster, user_password
from tests.support.proxy import ProxyProcess

WORKFLOWS = 210
STEP = "INSERT INTO ledger (instance_id, step) VALUES ('{{sys_instance_id}}', {n})"
# The second INSERT fails after its row is written, in about 3 attempts out of 10 (40001,
# which a failure policy retries): its row must be there once, from the attempt that
# succeeded, whatever the kills.
FLAKY_STEP = STEP.format(n=2) + " RETURNING flaky()"
GRAPH = (
    f"$${STEP.format(n=1)}$$ ~> 'SELECT pg_sleep(0.2 + 0.2 * random())' ~> $${FLAKY_STEP}$$"
    f" ~> $${STEP.format(n=3)}$$"
)
RETRIES = "max_attempts => 12, max_backoff => '0.2 s'"  # 0.3^12: no instance runs out
FLAKY = """CREATE FUNCTION flaky() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF random() < 0.3 THEN
        PERFORM nextval('flaky_failures');  -- a sequence: the rollback keeps the count
        RAISE EXCEPTION 'transient' USING ERRCODE = '40001';
    END IF;
    RETURN 1;
END $$"""
ARGS = ["--lease-seconds", "2", "--poll-interval", "0.2"]


@dataclass
class Crash:
    """A cluster to crash, how to reach it as its admin and as the workflow owner, and how
    pgdurable is started in front of it."""

    cluster: Cluster
    admin: str  # direct DSN of pgdurable's admin (owner of the catalog: sees every row)
    owner: str  # direct DSN of the workflow owner
    owner_password: str
    proxy_args: list[str]

    def proxy(self, log: Path) -> ProxyProcess:
        return ProxyProcess(self.admin, log_path=log, extra_args=[*ARGS, *self.proxy_args])


def _trust_crash(root: Path) -> Crash:
    cluster = make_cluster(FLAVORS[0], root)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE worker LOGIN")
    return Crash(cluster, cluster.dsn(), cluster.dsn("worker"), "", [])


def _scram_crash(root: Path) -> Crash:
    managed = make_managed_cluster(FLAVORS[0], root)
    managed.create_user("worker")
    secret = ["--secret-file", str(managed.secret_file)]
    owner = managed.dsn("worker")
    return Crash(managed.cluster, managed.dsn(), owner, user_password("worker"), secret)


@pytest.fixture(scope="module", params=["trust", "scram"])
def crash(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Crash]:
    """On a trust cluster, and on a password-only one (steps log in through runner roles)."""
    root = tmp_path_factory.mktemp(f"durability-{request.param}")
    crash = (_trust_crash if request.param == "trust" else _scram_crash)(root)
    with psycopg.connect(crash.admin, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE ledger (instance_id text, step int, at timestamptz DEFAULT now())"
        )
        conn.execute("GRANT INSERT, SELECT ON ledger TO worker")
        conn.execute("CREATE SEQUENCE flaky_failures")
        conn.execute("GRANT USAGE ON SEQUENCE flaky_failures TO worker")
        conn.execute(FLAKY)
    yield crash
    remove_cluster(crash.cluster)


def _start(dsn: str, count: int) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = f"SELECT df.start({GRAPH}, {RETRIES})"
        return [conn.execute(start).fetchone()[0] for _ in range(count)]  # type: ignore[index]


def _grant(crash: Crash) -> None:
    with psycopg.connect(crash.admin, autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage('worker')")


def _wait_all_done(admin: str, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT id, status FROM df.instances WHERE id = ANY(%s)", (ids,)
            ).fetchall()
            statuses = dict(rows)  # type: ignore[arg-type]
            if all(s in ("completed", "failed", "cancelled") for s in statuses.values()) and len(
                statuses
            ) == len(ids):
                return statuses
            if time.monotonic() > deadline:
                pending = {k: v for k, v in statuses.items() if v not in ("completed",)}
                raise AssertionError(f"not finished: {list(pending.items())[:10]}")
            time.sleep(0.2)


def _failures(admin: str, ids: list[str]) -> str:
    with psycopg.connect(admin) as conn:
        rows = conn.execute(
            "SELECT instance_id, node_type, result #>> '{}' FROM df.nodes "
            "WHERE instance_id = ANY(%s) AND status = 'failed'",
            (ids,),
        ).fetchall()
    return "\n".join(map(str, rows[:10]))


def _assert_exactly_once(admin: str, ids: list[str]) -> None:
    with psycopg.connect(admin) as conn:
        bad = conn.execute(
            "SELECT i.id, s.step, count(l.*) FROM unnest(%s::text[]) i(id) "
            "CROSS JOIN generate_series(1, 3) s(step) "
            "LEFT JOIN ledger l ON l.instance_id = i.id AND l.step = s.step "
            "GROUP BY 1, 2 HAVING count(l.*) <> 1",
            (ids,),
        ).fetchall()
    assert bad == [], f"steps not run exactly once: {bad[:10]}"


def test_sigkill_at_random_instants_loses_nothing(crash: Crash, tmp_path: Path) -> None:
    log = tmp_path / "pgdurable.log"
    proxy = crash.proxy(log).start()
    _grant(crash)
    second = crash.proxy(log).start()
    ids: list[str] = []
    rng = random.Random(4)
    try:
        for round_no in range(7):
            # starts both through pgdurable and directly against PostgreSQL
            ids += _start(proxy.dsn("worker", crash.owner_password), 15)
            ids += _start(crash.owner, 15)
            if round_no % 2 == 0:
                proxy.kill()  # right after a start committed
            else:
                time.sleep(rng.uniform(0.05, 0.6))  # mid-step or between steps
                proxy.kill()
            if round_no == 3:
                second.kill()
                second = crash.proxy(log).start()
            proxy = crash.proxy(log).start()
        statuses = _wait_all_done(crash.admin, ids, timeout=120)
    finally:
        proxy.kill()
        second.kill()
    assert len(ids) >= 200
    assert set(statuses.values()) == {"completed"}, _failures(crash.admin, ids)
    _assert_exactly_once(crash.admin, ids)
    assert "event=lease_taken_over" in log.read_text(), "no kill landed mid-step"
    with psycopg.connect(crash.admin) as conn:  # attempts failed, and were retried
        assert conn.execute("SELECT last_value FROM flaky_failures").fetchone()[0] > 20  # type: ignore[index]


def test_postgres_crash_restart_mid_run(crash: Crash, tmp_path: Path) -> None:
    log = tmp_path / "pgdurable.log"
    proxy = crash.proxy(log).start()
    _grant(crash)
    try:
        ids = _start(crash.owner, 40)
        time.sleep(0.3)
        crash.cluster.restart("immediate")
        ids += _start(crash.owner, 10)
        statuses = _wait_all_done(crash.admin, ids, timeout=120)
    finally:
        proxy.kill()
    assert set(statuses.values()) == {"completed"}, _failures(crash.admin, ids)
    _assert_exactly_once(crash.admin, ids)
