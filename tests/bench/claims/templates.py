"""The rows the engine itself writes for a queued task, to copy in bulk (backlog.py).

pgdurable runs on the template database with one step slot: a long step takes the slot, so
the next instance's SQL step is planned and leased to the engine and waits for the slot
(what every step of a busy engine's backlog looks like), and a sleep's timer is written
unleased, due in a day. Then pgdurable is SIGKILLed (the leased task stays leased, as a
crash leaves it), the long step's backend is ended, and one more instance is started
straight on PostgreSQL (the dead engine's heartbeat is younger than its lease, so df.start
accepts it) and stays as df.start left it, its first advance due. The instances' rows are
read back as JSON.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.bench.claims.backlog import Template
from tests.bench.workflows.servers import BENCH_ROLE, start_pgdurable

LONG_STEP = "SELECT pg_sleep(600)"
QUEUED_STEP = "SELECT 'queued' AS step"
SLEEPER = "df.sleep(86400) ~> 'SELECT 1'"
WAIT_S = 20.0

_ROWS = """
SELECT (SELECT to_jsonb(i) FROM df.instances i WHERE i.id = %(id)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(n) ORDER BY n.id), '[]') FROM df.nodes n
        WHERE n.instance_id = %(id)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(e)), '[]') FROM df._executions e
        WHERE e.instance_id = %(id)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(v)), '[]') FROM df._instance_vars v
        WHERE v.instance_id = %(id)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]') FROM df._node_state s
        WHERE s.instance_id = %(id)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]') FROM df._tasks t
        WHERE t.instance_id = %(id)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM df._advance a
        WHERE a.instance_id = %(id)s)
"""


def _wait_for_task(conn: psycopg.Connection[tuple[Any, ...]], instance: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if conn.execute("SELECT 1 FROM df._tasks WHERE instance_id = %s", (instance,)).fetchone():
            return
        time.sleep(0.02)
    raise RuntimeError(f"the engine wrote no task for instance {instance}")


def engine_templates(cluster: Cluster, database: str, log: Path) -> dict[str, Template]:
    """'sql' (a leased SQL step) and 'timer' (a sleep), as the engine wrote them, and
    'new' (a hello world as df.start wrote it)."""
    proxy = start_pgdurable(cluster, log, ["--log-level", "info", "--max-user-connections", "1"])
    try:
        with (
            psycopg.connect(proxy.dsn(user=BENCH_ROLE, dbname=database), autocommit=True) as conn,
            psycopg.connect(cluster.dsn(dbname=database), autocommit=True) as admin,
        ):
            long = _start(conn, f"df.start({_literal(LONG_STEP)})")
            _wait_for_task(admin, long)
            ids = {
                "sql": _start(conn, f"df.start({_literal(QUEUED_STEP)})"),
                "timer": _start(conn, f"df.start({SLEEPER})"),
            }
            for instance in ids.values():
                _wait_for_task(admin, instance)
    finally:
        proxy.kill()
    with psycopg.connect(cluster.dsn(dbname=database), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            (LONG_STEP,),
        )
    with psycopg.connect(cluster.dsn(user=BENCH_ROLE, dbname=database), autocommit=True) as conn:
        ids["new"] = _start(conn, "df.start('SELECT 1')")
    with psycopg.connect(cluster.dsn(dbname=database), autocommit=True) as admin:
        return {name: _template(admin, instance) for name, instance in ids.items()}


def _start(conn: psycopg.Connection[tuple[Any, ...]], call: str) -> str:
    row = conn.execute(f"SELECT {call}").fetchone()
    assert row is not None
    return str(row[0])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _template(conn: psycopg.Connection[tuple[Any, ...]], instance: str) -> Template:
    row = conn.execute(_ROWS, {"id": instance}).fetchone()
    if row is None or row[0] is None or not (row[5] or row[6]):
        raise RuntimeError(f"no rows for template instance {instance}")
    return Template(*row)
