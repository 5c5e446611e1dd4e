"""Logs an operator can follow (issue 17): at info, each instance's start and end, a step's
failure with its SQLSTATE (never its SQL), in the key=value text format and as one JSON
object per line (--log-format json); at the default level (warning), a normal run says
nothing.

The text format is the shared `proxy`'s log (it runs at info). One more pgdurable runs, on
its own database (where an instance waits for it to start), at info with --log-format json:
every line it writes is parsed, and once stopped with SIGTERM, no line of its whole run is
at warning or above, which is what the default level would print (the level is the
handlers' only filter, libraries' warnings included).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database, engine_presence, install_catalog
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


def _json_proxy(cluster: Cluster, log: Path) -> ProxyProcess:
    """pgdurable at info with --log-format json, started on a catalog where an instance
    waits (started while another engine was present, which then went away): what it
    recovers."""
    dsn = create_database(cluster, DATABASE)
    install_catalog(dsn)
    _grant(cluster, cluster.dsn(dbname=DATABASE))
    with engine_presence(dsn), psycopg.connect(cluster.dsn(ROLE, DATABASE)) as conn:
        conn.execute("SELECT df.start('SELECT 1')")
        conn.commit()
    args = ["--log-format", "json"]
    return ProxyProcess(cluster.dsn(dbname=DATABASE), extra_args=args, log_path=log).start()


def _run_four(dsn: str) -> dict[str, str]:
    """A workflow that fails, one that completes, one cancelled before its step and one
    cancelled while its step runs: their instance ids."""
    sleeping = f"SELECT pg_sleep(60) AS s{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = {
            kind: str(conn.execute(f"SELECT df.start({graph})").fetchone()[0])  # type: ignore[index]
            for kind, graph in (
                ("failed", FAILING),
                ("completed", "'SELECT 1 AS one'"),
                ("cancelled", "df.sleep(60) ~> 'SELECT 2'"),
                ("mid-step", f"'SELECT 1' ~> '{sleeping}'"),
            )
        }
        conn.execute("SELECT df.cancel(%s)", (ids["cancelled"],))
        deadline = time.monotonic() + 5
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query = %s AND state = 'active'", (sleeping,)
        ).fetchone():  # its backend runs it (a cancel before that waits for a lease renewal)
            assert time.monotonic() < deadline, "the pg_sleep step did not start"
            time.sleep(0.01)
        conn.execute("SELECT df.cancel(%s)", (ids["mid-step"],))
    for kind, instance in ids.items():
        assert await_status(dsn, instance, 10) == ("cancelled" if kind == "mid-step" else kind)
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
    ids = _run_four(proxy.dsn(ROLE))
    assert proxy.log_path is not None
    failed = ids["failed"]
    expected = [
        f"event=instance_started instance={failed} owner={ROLE} label=None$",
        f"event=step_failed instance={failed} node=[0-9a-f]{{8}} node_type=SQL "
        f"sqlstate=22012 retryable=True message='{DIVISION_BY_ZERO}'$",
        f"event=instance_failed instance={failed} message='{DIVISION_BY_ZERO}'$",
        f"event=instance_completed instance={ids['completed']}$",
        f"event=instance_cancelled instance={ids['cancelled']}$",
        f"event=step_cancelled instance={ids['mid-step']} node=[0-9a-f]{{8}} node_type=SQL$",
    ]
    text = _await_lines(
        proxy.log_path, lambda t: all(re.search(e, t, re.MULTILINE) for e in expected)
    )
    lines = [line for line in text.splitlines() if f"instance={ids['failed']}" in line]
    assert f"event=step_failed instance={ids['mid-step']} " not in text  # cancelled
    assert all(" level=INFO " in line for line in lines), lines
    assert MARKER not in text
    assert " level=INFO logger=pgdurable.catalog event=install_catalog version=" in text


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]  # every line


def test_a_run_in_json_lines_with_nothing_above_info(cluster: Cluster, tmp_path: Path) -> None:
    """Start (an instance recovered), workflows (one failing), SIGTERM: every line a JSON
    object, the events with their fields, and nothing at warning or above."""
    log = tmp_path / "pgdurable.json.log"
    json_proxy = _json_proxy(cluster, log)
    try:
        ids = _run_four(json_proxy.dsn(ROLE, dbname=DATABASE))
        wanted = {
            ("instance_started", ids["failed"]),
            ("step_failed", ids["failed"]),
            ("instance_failed", ids["failed"]),
            ("instance_completed", ids["completed"]),
            ("instance_cancelled", ids["cancelled"]),
            ("instance_cancelled", ids["mid-step"]),
            ("step_cancelled", ids["mid-step"]),
        }
        _await_lines(
            log, lambda t: all(f'"event": "{e}", "instance": "{i}"' in t for e, i in wanted)
        )
    finally:
        assert json_proxy.stop() == 0
    events = _events(log)
    assert all(e.keys() >= {"ts", "level", "logger"} for e in events)
    by_event = {(e.get("event"), e.get("instance")): e for e in events}
    failed = by_event[("step_failed", ids["failed"])]
    assert failed["level"] == "INFO" and failed["logger"] == "pgdurable.engine"
    assert failed["node_type"] == "SQL" and failed["sqlstate"] == "22012"
    assert failed["message"] == DIVISION_BY_ZERO and len(failed["node"]) == 8
    assert by_event[("instance_failed", ids["failed"])]["message"] == DIVISION_BY_ZERO
    assert by_event[("instance_started", ids["failed"])]["owner"] == ROLE
    assert ("step_failed", ids["mid-step"]) not in by_event  # cancelled, not failed
    assert MARKER not in log.read_text()
    # what the default level would have printed: nothing
    assert [e for e in events if e["level"] not in ("DEBUG", "INFO")] == []
    routine = {e.get("event"): e for e in events}
    assert {"engine_started", "listening", "shutting_down"} <= routine.keys()
    assert routine["recovery"]["instances"] == 1 and routine["recovery"]["leased_steps"] == 0


def test_a_start_up_error_is_a_json_line_too() -> None:
    """Whatever stops pgdurable at start is one JSON object under --log-format json."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--log-format", "json", "--upstream", "postgresql://u@127.0.0.1:1/x"]
        result = subprocess.run(
            [sys.executable, "-m", "pgdurable_proxy", *args, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    line = json.loads(result.stderr)
    assert line["level"] == "ERROR" and line["event"] == "fatal"
    assert str(port) in line["error"]
