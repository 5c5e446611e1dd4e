"""Logs an operator can follow (issue 17): at info, each instance's start and end, a step's
failure with its SQLSTATE (never its SQL), in the key=value text format and as one JSON
object per line (--log-format json); at the default level (warning), a normal run says
nothing.

The text format is the shared `proxy`'s log (it runs at info). One more pgdurable serves
this module, on its own database (where an instance waits for it to start), at info with
--log-format json: every line it writes is parsed, and the last test stops it with SIGTERM
and finds no line at warning or above in its whole run, which is what the default level
would print (the level is the handlers' only filter, libraries' warnings included).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database, install_catalog
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status

ROLE = "oplogs_user"
DATABASE = "oplogs_json"
MARKER = "never_logged_4f2a"  # in the failing step's SQL: never in a log without the flag
FAILING = f"'SELECT 1/0 AS {MARKER}'"
DIVISION_BY_ZERO = "SQL execution failed: error returned from database: division by zero"


def _grant(cluster: Cluster, dsn: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage(%s)", (ROLE,))


@pytest.fixture(scope="module")
def json_proxy(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """pgdurable at info with --log-format json, started on a catalog where an instance
    waits (started with no engine running): what it recovers."""
    install_catalog(create_database(cluster, DATABASE))
    _grant(cluster, cluster.dsn(dbname=DATABASE))
    with psycopg.connect(cluster.dsn(ROLE, DATABASE), autocommit=True) as conn:
        conn.execute("SELECT df.start('SELECT 1')")
    log = tmp_path_factory.mktemp("operator-logs") / "pgdurable.json.log"
    args = ["--log-format", "json"]
    proxy = ProxyProcess(cluster.dsn(dbname=DATABASE), extra_args=args, log_path=log).start()
    yield proxy
    proxy.stop()


def _run_three(dsn: str) -> dict[str, str]:
    """A workflow that fails, one that completes and one cancelled: their instance ids."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = {
            kind: str(conn.execute(f"SELECT df.start({graph})").fetchone()[0])  # type: ignore[index]
            for kind, graph in (
                ("failed", FAILING),
                ("completed", "'SELECT 1 AS one'"),
                ("cancelled", "df.sleep(60) ~> 'SELECT 2'"),
            )
        }
        conn.execute("SELECT df.cancel(%s)", (ids["cancelled"],))
    for kind, instance in ids.items():
        assert await_status(dsn, instance, 10) == kind
    return ids


def _await_lines(log: Path, found: Callable[[str], bool]) -> str:
    """The log once `found` holds for it (the engine logs after it commits)."""
    deadline = time.monotonic() + 5
    while not found(text := log.read_text()):
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.02)
    return text


def test_a_failing_workflow_in_key_value_lines(proxy: ProxyProcess, cluster: Cluster) -> None:
    _grant(cluster, proxy.dsn())
    ids = _run_three(proxy.dsn(ROLE))
    assert proxy.log_path is not None
    failed = ids["failed"]
    expected = [
        f"event=instance_started instance={failed} owner={ROLE} label=None$",
        f"event=step_failed instance={failed} node=[0-9a-f]{{8}} node_type=SQL "
        f"sqlstate=22012 message='{DIVISION_BY_ZERO}'$",
        f"event=instance_failed instance={failed} message='{DIVISION_BY_ZERO}'$",
        f"event=instance_completed instance={ids['completed']}$",
        f"event=instance_cancelled instance={ids['cancelled']}$",
    ]
    text = _await_lines(
        proxy.log_path, lambda t: all(re.search(e, t, re.MULTILINE) for e in expected)
    )
    lines = [line for line in text.splitlines() if f"instance={ids['failed']}" in line]
    assert all(" level=INFO " in line for line in lines), lines
    assert MARKER not in text
    assert " level=INFO logger=pgdurable.catalog event=install_catalog version=" in text


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]  # every line


def test_a_failing_workflow_in_json_lines(json_proxy: ProxyProcess) -> None:
    assert json_proxy.log_path is not None
    ids = _run_three(json_proxy.dsn(ROLE, dbname=DATABASE))
    wanted = {
        ("instance_started", ids["failed"]),
        ("step_failed", ids["failed"]),
        ("instance_failed", ids["failed"]),
        ("instance_completed", ids["completed"]),
        ("instance_cancelled", ids["cancelled"]),
    }
    _await_lines(
        json_proxy.log_path,
        lambda t: all(f'"event": "{e}", "instance": "{i}"' in t for e, i in wanted),
    )
    events = _events(json_proxy.log_path)
    assert all(e.keys() >= {"ts", "level", "logger"} for e in events)
    by_event = {(e.get("event"), e.get("instance")): e for e in events}
    failed = by_event[("step_failed", ids["failed"])]
    assert failed["level"] == "INFO" and failed["logger"] == "pgdurable.engine"
    assert failed["node_type"] == "SQL" and failed["sqlstate"] == "22012"
    assert failed["message"] == DIVISION_BY_ZERO and len(failed["node"]) == 8
    assert by_event[("instance_failed", ids["failed"])]["message"] == DIVISION_BY_ZERO
    assert by_event[("instance_started", ids["failed"])]["owner"] == ROLE
    assert MARKER not in json_proxy.log_path.read_text()


def test_a_normal_run_says_nothing_at_the_default_level(json_proxy: ProxyProcess) -> None:
    """Start (an instance recovered), workflows (one failing), SIGTERM: all at info."""
    assert json_proxy.log_path is not None
    assert json_proxy.stop() == 0
    events = _events(json_proxy.log_path)
    assert [e for e in events if e["level"] not in ("DEBUG", "INFO")] == []
    by_event = {e.get("event"): e for e in events}
    assert {"engine_started", "listening", "shutting_down"} <= by_event.keys()
    assert by_event["recovery"]["instances"] == 1 and by_event["recovery"]["leased_steps"] == 0
