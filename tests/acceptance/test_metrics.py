"""/metrics of the real pgdurable, parsed by prometheus_client's parser: every family has
HELP, and the named metrics move as workflows run and as due work waits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.support.metrics import read_families, read_metrics
from tests.support.proxy import ProxyProcess
from tests.support.workflows import start_and_await

HTTP_ROLE = "metrics_http_user"
CACHE_SECONDS = 1.0  # the catalog's gauges are read at most this often


def _moved(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after[key] - before.get(key, 0.0)


def _steps(node_type: str, outcome: str) -> str:
    return f'steps_finished_total{{node_type="{node_type}",outcome="{outcome}"}}'


def _until(http_port: int, check: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """Scrape until `check` holds (the catalog's gauges may be up to a second old)."""
    deadline = time.monotonic() + 4 * CACHE_SECONDS
    while True:
        values = read_metrics(http_port)
        if check(values) or time.monotonic() > deadline:
            return values
        time.sleep(0.1)


def _http_dsn(proxy: ProxyProcess, cluster: Cluster) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (HTTP_ROLE,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {HTTP_ROLE} LOGIN")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s, include_http => true)", (HTTP_ROLE,))
    return proxy.dsn(HTTP_ROLE)


def test_metrics_have_help_and_move_as_workflows_run(
    proxy: ProxyProcess, wf_dsn: str, cluster: Cluster
) -> None:
    families = read_families(proxy.http_port)
    assert all(f.documentation for f in families.values()), [
        name for name, f in families.items() if not f.documentation
    ]
    before = read_metrics(proxy.http_port)
    with psycopg.connect(wf_dsn, autocommit=True) as conn:  # running while we look
        sleeper = conn.execute("SELECT df.start('SELECT pg_sleep(1.5)')").fetchone()
    assert sleeper is not None
    running = _until(proxy.http_port, lambda m: m.get('instances{status="running"}', 0) >= 1)
    assert running['instances{status="running"}'] >= 1 and running["catalog_up"] == 1
    assert start_and_await(wf_dsn, "'SELECT 1' ~> 'SELECT 2'")[1] == "completed"
    assert start_and_await(wf_dsn, "'SELECT 1/0'")[1] == "failed"
    blocked = "df.http('http://127.0.0.1:9/metrics', 'GET')"  # no --http-allow: blocked
    assert start_and_await(_http_dsn(proxy, cluster), blocked)[1] == "failed"
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("SELECT df.await_instance(%s, 10)", (sleeper[0],))
    after = read_metrics(proxy.http_port)

    assert _moved(before, after, _steps("SQL", "completed")) >= 3
    assert _moved(before, after, _steps("SQL", "failed")) >= 1
    assert _moved(before, after, _steps("HTTP", "failed")) >= 1
    assert _moved(before, after, 'http_step_requests_total{outcome="blocked"}') >= 1
    assert _moved(before, after, 'step_duration_seconds_count{node_type="SQL"}') >= 4
    slow = 'step_duration_seconds_bucket{le="1.0",node_type="SQL"}'
    assert _moved(before, after, 'step_duration_seconds_count{node_type="SQL"}') > _moved(
        before, after, slow
    )  # the pg_sleep(1.5) step is past the 1 s bucket
    assert _moved(before, after, 'instances_finished_total{status="completed"}') >= 2
    assert _moved(before, after, 'instances_finished_total{status="failed"}') >= 2
    completed = 'instance_duration_seconds_sum{status="completed"}'
    assert _moved(before, after, completed) >= 1.5  # the sleeper, from df.start on
    assert _moved(before, after, 'relay_bytes_total{direction="client_to_server"}') > 0
    assert _moved(before, after, 'relay_bytes_total{direction="server_to_client"}') > 0
    assert _moved(before, after, "sessions_total") >= 5
    assert after["process_resident_memory_bytes"] > 0


def test_due_work_no_engine_runs_shows_as_backlog(proxy: ProxyProcess, cluster: Cluster) -> None:
    """Task rows of an instance that does not exist are never claimed (the claim joins the
    instance): one unclaimed and one whose lease expired stay due while we look."""
    ids = [uuid.uuid4().hex[:8] for _ in range(2)]
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO df._tasks (instance_id, node_id, node_type, due_at) "
            "VALUES (%s, '00000001', 'SLEEP', now() - interval '1 minute')",
            (ids[0],),
        )
        conn.execute(
            "INSERT INTO df._tasks (instance_id, node_id, node_type, due_at, lease_owner, "
            "lease_token, lease_until, attempts) VALUES (%s, '00000001', 'SQL', "
            "now() - interval '2 minutes', gen_random_uuid(), gen_random_uuid(), "
            "now() - interval '30 seconds', 1)",
            (ids[1],),
        )
        try:
            seen = _until(
                proxy.http_port,
                lambda m: (
                    m.get('tasks_due{state="lease_expired"}', 0) >= 1
                    and m.get('tasks_due{state="unclaimed"}', 0) >= 1
                ),
            )
        finally:
            conn.execute("DELETE FROM df._tasks WHERE instance_id = ANY (%s)", (ids,))
    assert seen['tasks_due{state="unclaimed"}'] >= 1
    assert seen['tasks_due{state="lease_expired"}'] >= 1
    assert seen["tasks_due_oldest_age_seconds"] >= 59  # the unclaimed one, due a minute ago
    assert "advances_due" in seen and "catalog_read_seconds" in seen
