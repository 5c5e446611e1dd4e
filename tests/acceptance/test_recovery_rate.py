"""After a SIGKILL, orphaned steps are claimed as fast as step slots free up, not one batch of
free slots per poll interval."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import FLAVORS, make_cluster, remove_cluster
from tests.support.metrics import read_metrics
from tests.support.proxy import ProxyProcess

ORPHANS = 300
SLOTS = 10
POLL = 1.0
# claiming at most the free slots once per poll takes ORPHANS / SLOTS * POLL = 30 s
ARGS = [
    "--lease-seconds",
    "2",
    "--poll-interval",
    str(POLL),
    "--max-user-connections",
    str(SLOTS),
]
STEP = "$$INSERT INTO effects VALUES ('{sys_instance_id}')$$"


@pytest.fixture
def orphan_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(FLAVORS[0], tmp_path_factory.mktemp("recovery"))
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE worker LOGIN")
        conn.execute("CREATE TABLE effects (instance_id text PRIMARY KEY)")
        conn.execute("GRANT INSERT, SELECT ON effects TO worker")
    yield cluster
    remove_cluster(cluster)


def _leased(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM df._tasks WHERE lease_owner IS NOT NULL").fetchone()
    return int(row[0])  # type: ignore[index]


def _waiting_for_slot(proxy: ProxyProcess) -> int:
    return int(read_metrics(proxy.http_port)["steps_waiting_for_slot"])


def _waiting_for_slot(proxy: ProxyProcess) -> int:
    return int(read_metrics(proxy.http_port)["steps_waiting_for_slot"])


def _orphan_steps(cluster: Cluster, log: Path) -> int:
    """ORPHANS one-step workflows a killed pgdurable had taken: SLOTS steps waiting for a lock
    the test holds (their first plans committed apart, leased), all others waiting for a
    step slot (as leased tasks, or, up to SLOTS, as first steps held in memory, whose
    instances its scheduler claimed). Returns how many tasks it had leased."""
    proxy = ProxyProcess(cluster.dsn(), extra_args=ARGS, log_path=log).start()
    try:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage('worker')")
        with psycopg.connect(cluster.dsn()) as locker, psycopg.connect(cluster.dsn()) as admin:
            locker.execute("LOCK TABLE effects IN ACCESS EXCLUSIVE MODE")
            with psycopg.connect(cluster.dsn("worker"), autocommit=True) as conn:
                for _ in range(ORPHANS):
                    conn.execute(f"SELECT df.start({STEP})")
            deadline = time.monotonic() + 30
            while _waiting_for_slot(proxy) < ORPHANS - SLOTS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _waiting_for_slot(proxy) == ORPHANS - SLOTS
            leased = _leased(admin)
            assert leased >= ORPHANS - SLOTS  # the first steps held in memory: at most SLOTS
            proxy.kill()
            locker.rollback()  # the killed engine's steps roll back as their backends notice
    finally:
        proxy.kill()
    return leased


def test_orphans_are_claimed_as_fast_as_slots_free_up(
    orphan_cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "pgdurable.log"
    leased = _orphan_steps(orphan_cluster, log)
    proxy = ProxyProcess(orphan_cluster.dsn(), extra_args=ARGS, log_path=log).start()
    try:
        started = time.monotonic()
        with psycopg.connect(orphan_cluster.dsn(), autocommit=True) as conn:
            done = 0
            while done < ORPHANS and time.monotonic() - started < 60:
                time.sleep(0.1)
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'completed') FROM df.instances"
                ).fetchone()
                done = int(row[0])  # type: ignore[index]
            elapsed = time.monotonic() - started
            effects = conn.execute("SELECT count(*) FROM effects").fetchone()
    finally:
        proxy.kill()
    assert done == ORPHANS
    assert effects == (ORPHANS,)
    # the structural bound of one claim of the free slots per poll: ORPHANS / SLOTS * POLL
    # seconds (30 s); the leases still need up to 2 s to expire
    bound = ORPHANS / SLOTS * POLL
    assert elapsed < bound / 3, f"{ORPHANS} orphans took {elapsed:.1f} s (bound {bound:.0f} s)"
    assert log.read_text().count("event=lease_taken_over") >= leased - SLOTS
