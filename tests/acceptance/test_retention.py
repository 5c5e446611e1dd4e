"""Bounded growth (pg_durable 0.2.4's reconciliation): finished instances older than
--retention-days, or beyond the newest --retention-max-instances, are deleted with every
row of theirs; pending and running instances never are.

One pgdurable serves the module on a database of its own, with a retention pass every
second, a 1-day window and a cap of 5. Instances finish by running real workflows; age is
simulated by an administrator's UPDATE of their timestamps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_running, await_status, start_and_await

ROLE = "retention_user"
DATABASE = "retention"
CAP = 5
FLAGS = [
    *("--reconcile-interval", "1", "--retention-days", "1"),
    *("--retention-max-instances", str(CAP), "--poll-interval", "0.2"),
]
AGE = "2 days"  # past the 1-day window
# every table of df and _duroxide that holds rows of an instance, and its column for it
INSTANCE_COLUMNS = """
SELECT format('%I.%I', c.table_schema, c.table_name), c.column_name
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema IN ('df', '_duroxide') AND t.table_type = 'BASE TABLE'
  AND (c.column_name = 'instance_id' OR (c.table_name = 'instances' AND c.column_name = 'id'))
"""


@dataclass
class Served:
    proxy: ProxyProcess
    admin: str  # the database directly, as its owner
    log: Path

    @property
    def user(self) -> str:
        return self.proxy.dsn(ROLE, dbname=DATABASE)

    def instances(self) -> set[str]:
        with psycopg.connect(self.admin) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM df.instances")}


@pytest.fixture(scope="module")
def served(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN")
    admin = create_database(cluster, DATABASE)
    log = tmp_path_factory.mktemp("retention") / "pgdurable.log"
    proxy = ProxyProcess(admin, extra_args=FLAGS, log_path=log).start()
    try:
        with psycopg.connect(proxy.dsn(dbname=DATABASE), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage(%s)", (ROLE,))
        with psycopg.connect(proxy.dsn(ROLE, dbname=DATABASE), autocommit=True) as conn:
            conn.execute("SELECT df.setvar('region', 'eu')")  # captured by each df.start
        yield Served(proxy, admin, log)
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def running(served: Served) -> str:
    """An instance waiting for a signal that never comes, created two days ago."""
    with psycopg.connect(served.user, autocommit=True) as conn:
        row = conn.execute("SELECT df.start(df.wait_for_signal('never'))").fetchone()
        assert row is not None
        await_running(conn, row[0])
    _age(served, [row[0]])
    return str(row[0])


def _age(served: Served, ids: list[str]) -> None:
    with psycopg.connect(served.admin, autocommit=True) as conn:
        conn.execute(
            "UPDATE df.instances SET created_at = created_at - %s::interval, "
            "completed_at = completed_at - %s::interval WHERE id = ANY (%s)",
            (AGE, AGE, ids),
        )


def _rows_of(served: Served, ids: list[str]) -> dict[str, int]:
    """Rows of these instances in each df/_duroxide table that holds instances' rows."""
    counts = {}
    with psycopg.connect(served.admin) as conn:
        for table, column in conn.execute(INSTANCE_COLUMNS).fetchall():
            query = f"SELECT count(*) FROM {table} WHERE {column}::text = ANY (%s)"
            row = conn.execute(query, (ids,)).fetchone()
            assert row is not None
            counts[table] = row[0]
    return counts


def _await_gone(served: Served, ids: list[str]) -> None:
    deadline = time.monotonic() + 10
    while served.instances() & set(ids):
        assert time.monotonic() < deadline, f"still there: {served.instances() & set(ids)}"
        time.sleep(0.1)


def _cancelled(served: Served) -> str:
    with psycopg.connect(served.user, autocommit=True) as conn:
        row = conn.execute("SELECT df.start(df.wait_for_signal('never'))").fetchone()
        assert row is not None
        await_running(conn, row[0])
        conn.execute("SELECT df.cancel(%s)", (row[0],))
    assert await_status(served.user, row[0]) == "cancelled"
    return str(row[0])


def _leftovers(served: Served, ids: list[str]) -> None:
    """Engine rows a finished instance no longer has, as a crash could leave them behind:
    they go with their instance too."""
    with psycopg.connect(served.admin, autocommit=True) as conn:
        for instance in ids:
            conn.execute(
                "INSERT INTO df._tasks (instance_id, node_id, node_type, due_at) "
                "SELECT %s, root_node, 'SQL', now() + interval '1 day' FROM df.instances "
                "WHERE id = %s",
                (instance, instance),
            )
            conn.execute(
                "INSERT INTO df._advance (instance_id, requested_at) "
                "VALUES (%s, now() + interval '1 day')",
                (instance,),
            )
            conn.execute(
                "INSERT INTO df._signals (instance_id, signal_name) VALUES (%s, 'late')",
                (instance,),
            )


def test_finished_instances_past_the_window_go_with_every_row_of_theirs(
    served: Served, running: str
) -> None:
    completed, _ = start_and_await(served.user, "%s ~> %s", "SELECT 1 AS a", "SELECT 2 AS b")
    failed, status = start_and_await(served.user, "%s", "SELECT 1/0")
    assert status == "failed"
    old = [completed, failed, _cancelled(served)]
    recent, _ = start_and_await(served.user, "%s", "SELECT 3 AS c")
    _leftovers(served, old)
    before = _rows_of(served, old)
    for table in ("df.instances", "df.nodes", "df._executions", "df._node_state"):
        assert before[table] > 0, table
    for table in ("df._tasks", "df._advance", "df._signals", "df._instance_vars"):
        assert before[table] == len(old), table
    _age(served, old)
    with psycopg.connect(served.admin, autocommit=True) as conn:  # age is not updated_at
        conn.execute(
            "UPDATE df.instances SET updated_at = now() - %s::interval WHERE id = %s",
            (AGE, recent),
        )
    _await_gone(served, old)
    assert {running, recent} <= served.instances()
    assert _rows_of(served, old) == dict.fromkeys(before, 0)
    passes = re.findall(r"event=retention_pass pruned=\d+ by_age=(\d+)", served.log.read_text())
    assert sum(int(n) for n in passes) >= len(old)


def test_beyond_the_cap_the_oldest_finished_go_even_when_young(
    served: Served, running: str
) -> None:
    ids = [start_and_await(served.user, "%s", f"SELECT {n} AS n")[0] for n in range(CAP + 2)]
    _await_gone(served, ids[:2])
    with psycopg.connect(served.admin) as conn:
        finished = conn.execute(
            "SELECT array_agg(id) FROM df.instances WHERE status <> 'running'"
        ).fetchone()
    assert finished is not None and set(finished[0]) == set(ids[2:])  # the newest 5
    assert running in served.instances()
    passes = re.findall(r"event=retention_pass .* by_cap=(\d+)", served.log.read_text())
    assert sum(int(n) for n in passes) >= 2
