"""df.instance_activity through pgdurable (issue 17, "is it stuck?"): what the engine's own
rows say an instance waits for (a timer, a signal, a running step), only for the caller's
instances. Every kind of wait, on rows written by hand: tests/integration/."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.proxy import ProxyProcess

OTHER = "activity_other"
WAITS = "SELECT instance_id, node_type, wait_kind, waiting_for FROM df.instance_activity(%s)"


@pytest.fixture
def other_dsn(proxy: ProxyProcess, cluster: Cluster) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (OTHER,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {OTHER} LOGIN")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage(%s)", (OTHER,))
    return proxy.dsn(OTHER)


def _start(conn: psycopg.Connection, graph: str) -> str:
    row = conn.execute(f"SELECT df.start({graph})").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def started(wf_dsn: str, other_dsn: str) -> Iterator[dict[str, str]]:
    """A sleeping instance, one waiting for a signal and one running a step of wf_user's,
    and a sleeping one of another user's; cancelled afterwards."""
    with (
        psycopg.connect(wf_dsn, autocommit=True) as mine,
        psycopg.connect(other_dsn, autocommit=True) as theirs,
    ):
        ids = {
            "sleep": _start(mine, "df.sleep(60)"),
            "signal": _start(mine, "df.wait_for_signal('activity_go')"),
            "step": _start(mine, "'SELECT 1' ~> 'SELECT pg_sleep(30)'"),
            "theirs": _start(theirs, "df.sleep(60)"),
        }
        yield ids
        for key, instance in ids.items():
            (theirs if key == "theirs" else mine).execute("SELECT df.cancel(%s)", (instance,))


def test_what_each_instance_waits_for(started: dict[str, str], wf_dsn: str) -> None:
    expected = {
        started["sleep"]: ("SLEEP", "timer", "timer until "),
        started["signal"]: ("SIGNAL", "signal", "signal 'activity_go'"),
        started["step"]: ("SQL", "running", "SQL step running for "),
    }
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 5
        while True:
            rows = conn.execute(WAITS, ("0",)).fetchall()
            seen = {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] in started.values()}
            if all(
                i in seen and seen[i][:2] == e[:2] and seen[i][2].startswith(e[2])
                for i, e in expected.items()
            ):
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.02)
        assert started["theirs"] not in seen  # another user's: not shown
        quiet = conn.execute(WAITS, ("1 hour",)).fetchall()
        assert not {r[0] for r in quiet} & set(started.values())  # they just progressed
