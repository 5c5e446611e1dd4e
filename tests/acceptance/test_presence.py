"""The engine's presence: df._worker_epoch heartbeats with several pgdurable processes on one
database, and df.start failing fast when no engine is ready (pg_durable 0.2.8)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database, install_catalog
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status

LEASE = 3.0  # heartbeats every LEASE / 3 seconds
ARGS = ["--lease-seconds", str(LEASE), "--poll-interval", "0.2"]
OWNER = "presence_user"
NOT_READY = (
    "failed to start durable function: pg_durable background worker not yet initialized"
    " — try again in a moment"
)
Epochs = dict[str, tuple[object, object]]  # epoch id -> (started_at, last_seen_at)


@pytest.fixture(scope="module")
def database(cluster: Cluster) -> str:
    """A database whose catalog is installed but which no engine has served yet."""
    dsn = create_database(cluster, "df_presence")
    install_catalog(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (OWNER,)).fetchone():
            conn.execute(f"CREATE ROLE {OWNER} LOGIN")
        conn.execute("SELECT df.grant_usage(%s)", (OWNER,))
    return dsn


class Engines:
    """The pgdurable processes of this module, all in front of `database`."""

    def __init__(self, database: str, log: Path) -> None:
        self.database = database
        self.log = log
        self.running: list[ProxyProcess] = []

    def start(self) -> ProxyProcess:
        process = ProxyProcess(self.database, extra_args=ARGS, log_path=self.log)
        self.running.append(process)
        return process.start()

    def kill(self, process: ProxyProcess) -> None:
        process.kill()
        self.running.remove(process)


@pytest.fixture(scope="module")
def engines(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    engines = Engines(database, tmp_path_factory.mktemp("presence") / "pgdurable.log")
    yield engines
    for process in engines.running:
        process.kill()


def _as_owner(dsn: str) -> str:
    return dsn.replace("postgres@", f"{OWNER}@", 1)


def _epochs(database: str) -> Epochs:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT epoch_id::text, started_at, last_seen_at FROM df._worker_epoch"
        ).fetchall()
    return {epoch: (started, seen) for epoch, started, seen in rows}


def _start(dsn: str) -> str:
    with psycopg.connect(_as_owner(dsn), autocommit=True) as conn:
        row = conn.execute("SELECT df.start('SELECT 1')").fetchone()
    assert row is not None
    return str(row[0])


def _refused(database: str) -> bool:
    """Does df.start fail fast, with pg_durable's text, leaving no row behind?"""
    with psycopg.connect(database, autocommit=True) as admin:
        before = admin.execute("SELECT count(*) FROM df.instances").fetchone()
        try:
            _start(database)
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            assert exc.diag.message_primary == NOT_READY
            assert admin.execute("SELECT count(*) FROM df.instances").fetchone() == before
            return True
    return False


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_start_fails_fast_when_no_engine_ever_served_the_database(database: str) -> None:
    assert _epochs(database) == {}
    assert _refused(database)


def test_each_live_pgdurable_keeps_one_heartbeat_row(database: str, engines: Engines) -> None:
    first = engines.start()
    (mine,) = _epochs(database)
    second = engines.start()
    both = _epochs(database)
    assert len(both) == 2 and mine in both
    _until(lambda: all(_epochs(database)[e][1] > seen for e, (_, seen) in both.items()))
    engines.kill(second)  # its row goes with the next heartbeat of the living one
    _until(lambda: set(_epochs(database)) == {mine})
    assert await_status(first.dsn(OWNER, dbname="df_presence"), _start(database)) == "completed"


def test_a_pgdurable_restarted_within_its_lease_fails_no_start(
    database: str, engines: Engines
) -> None:
    process = engines.running[0] if engines.running else engines.start()
    (old,) = _epochs(database)
    engines.kill(process)
    queued = _start(database)  # the dead engine's heartbeat is younger than the lease
    process = engines.start()  # and replaces its row: one row again
    (new,) = _epochs(database)
    assert new != old
    through = process.dsn(OWNER, dbname="df_presence")
    assert await_status(through, queued) == "completed"
    engines.kill(process)
    _until(lambda: _refused(database), timeout=LEASE + 2)  # gone longer than the lease
