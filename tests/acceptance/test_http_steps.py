"""df.http / df.http_multipart steps end to end: a local server, a pgdurable allowed to
reach exactly that server's ip:port, and workflows started by non-superuser roles."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from engine.redaction import redact_url
from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database
from tests.support.http_server import PNG, ServerThread
from tests.support.proxy import ProxyProcess

DATABASE = "http_steps"  # not the shared proxy's database: its engine must not run these
HTTP_ROLE = "http_user"
PLAIN_ROLE = "no_http_user"
MAX_RESPONSE = 1024 * 1024
MAX_REQUEST = 4096
MAX_TIMEOUT = 5  # leaves a RACE against df.sleep(1) a wide margin


@dataclass
class Setup:
    proxy: ProxyProcess
    server: ServerThread  # allowed by --http-allow
    other: ServerThread  # on 127.0.0.1, another port: not allowed

    def dsn(self, role: str = HTTP_ROLE) -> str:
        return self.proxy.dsn(role, dbname=DATABASE)


@pytest.fixture(scope="module")
def http(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    server, other = ServerThread().start(), ServerThread("127.0.0.1").start()
    create_database(cluster, DATABASE)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for role in (HTTP_ROLE, PLAIN_ROLE):
            if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(f"CREATE ROLE {role} LOGIN")
    args = [
        *("--http-allow", f"{server.host}:{server.port}"),
        *("--http-max-response-bytes", str(MAX_RESPONSE)),
        *("--http-max-request-bytes", str(MAX_REQUEST)),
        *("--http-max-timeout", str(MAX_TIMEOUT)),
        *("--http-max-redirects", "3"),
        *("--poll-interval", "0.2"),
    ]
    log = tmp_path_factory.mktemp("http-steps") / "pgdurable.log"
    proxy = ProxyProcess(cluster.dsn(dbname=DATABASE), extra_args=args, log_path=log).start()
    with psycopg.connect(proxy.dsn(dbname=DATABASE), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s, include_http => true)", (HTTP_ROLE,))
        conn.execute("SELECT df.grant_usage(%s)", (PLAIN_ROLE,))
    try:
        yield Setup(proxy, server, other)
    finally:
        proxy.stop()
        server.stop()
        other.stop()


@dataclass
class Run:
    instance: str
    status: str
    result: Any  # df.result (the root's result), parsed
    nodes: list[tuple[str, str, Any, Any]]  # node_type, status, result, status_details

    def node(self, node_type: str) -> tuple[str, Any, Any]:
        found = [n[1:] for n in self.nodes if n[0] == node_type]
        assert len(found) == 1, self.nodes
        return found[0]


def _start(dsn: str, graph_sql: str, params: tuple[Any, ...] = ()) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph_sql})", params).fetchone()
        assert row is not None
        return str(row[0])


def _await(dsn: str, instance: str) -> Run:
    with psycopg.connect(dsn, autocommit=True) as conn:
        status = conn.execute("SELECT df.await_instance(%s, 60)", (instance,)).fetchone()
        result = conn.execute("SELECT df.result(%s)", (instance,)).fetchone()
        nodes = conn.execute(
            "SELECT node_type, status, result, status_details FROM df.nodes "
            "WHERE instance_id = %s ORDER BY created_at, id",
            (instance,),
        ).fetchall()
    assert status is not None and result is not None
    parsed = json.loads(result[0]) if result[0] is not None else None
    return Run(instance, str(status[0]), parsed, [tuple(n) for n in nodes])  # type: ignore[misc]


def _run(dsn: str, graph_sql: str, params: tuple[Any, ...] = ()) -> Run:
    return _await(dsn, _start(dsn, graph_sql, params))


def _error(run: Run, node_type: str = "HTTP") -> str:
    assert run.status == "failed", run.nodes
    status, result, _ = run.node(node_type)
    assert status == "failed"
    return str(result)


def test_get_json_gives_the_envelope_and_feeds_later_steps(http: Setup) -> None:
    url = http.server.url("/json")
    run = _run(
        http.dsn(),
        "df.http(%s, 'GET') |=> 'h' ~> "
        "'SELECT $h.status::int AS s, $h.ok AS ok, $h.body::jsonb AS b'",
        (url,),
    )
    assert run.status == "completed", run.nodes
    assert run.result["rows"] == [{"s": 200, "ok": True, "b": {"greeting": "hello", "n": 42}}]
    status, envelope, details = run.node("HTTP")
    assert status == "completed" and details["delivery"] == "at-least-once"
    assert envelope["status"] == 200 and envelope["ok"] is True
    assert envelope["encoding"] == "text" and json.loads(envelope["body"])["n"] == 42
    assert envelope["headers"]["content-type"].startswith("application/json")
    assert isinstance(envelope["duration_ms"], int)
    with psycopg.connect(http.dsn()) as conn:
        explain = conn.execute("SELECT df.explain(%s)", (run.instance,)).fetchone()
        inspected = conn.execute(
            "SELECT node_type, inferred_status FROM df.instance_nodes(%s) WHERE node_type = 'HTTP'",
            (run.instance,),
        ).fetchall()
    assert explain is not None and "HTTP GET http://127.0.0.2:" in explain[0]
    assert inspected == [("HTTP", "completed")]


def test_engine_output_keeps_the_compact_envelope(http: Setup) -> None:
    run = _run(http.dsn(), "df.http(%s, 'GET')", (http.server.url("/binary"),))
    assert run.status == "completed"
    assert run.result["encoding"] == "base64" and base64.b64decode(run.result["body"]) == PNG
    with psycopg.connect(http.dsn()) as conn:
        row = conn.execute("SELECT output FROM df.instance_info(%s)", (run.instance,)).fetchone()
    assert row is not None and row[0].startswith('{"status":200,"body":"')


def test_4xx_completes_and_5xx_fails(http: Setup) -> None:
    run = _run(http.dsn(), "df.http(%s, 'DELETE')", (http.server.url("/status/404"),))
    assert run.status == "completed"
    assert run.result["status"] == 404 and run.result["ok"] is False
    url = http.server.url("/status/502")
    error = _error(_run(http.dsn(), "df.http(%s, 'POST', 'x')", (url,)))
    assert error == f"HTTP POST {url} returned 502: status 502 " + "x" * (512 - 11)


def test_timeouts_and_the_timeout_cap(http: Setup) -> None:
    url = http.server.url("/slow?s=20")
    short = _start(http.dsn(), "df.http(%s, 'GET', timeout_seconds => 1)", (url,))
    capped = _start(http.dsn(), "df.http(%s, 'GET', timeout_seconds => 600)", (url,))
    shown = http.server.url("/slow?s=REDACTED")  # query values are redacted in errors
    assert _error(_await(http.dsn(), short)) == f"HTTP timeout after 1s: {shown}"
    assert _error(_await(http.dsn(), capped)) == f"HTTP timeout after {MAX_TIMEOUT}s: {shown}"


def test_size_limits(http: Setup) -> None:
    url = http.server.url("/huge?n=20000000")
    assert _error(_run(http.dsn(), "df.http(%s, 'GET')", (url,))) == (
        f"HTTP response from {redact_url(url)} is larger than the limit of {MAX_RESPONSE} bytes "
        "(--http-max-response-bytes)"
    )
    body = "b" * (MAX_REQUEST + 1)
    url = http.server.url("/echo")
    assert _error(_run(http.dsn(), "df.http(%s, 'POST', %s)", (url, body))) == (
        f"HTTP request body is {MAX_REQUEST + 1} bytes, more than the limit of {MAX_REQUEST} "
        "bytes (--http-max-request-bytes)"
    )


def test_redirects_followed_within_the_allowed_destination(http: Setup) -> None:
    run = _run(http.dsn(), "df.http(%s, 'GET')", (http.server.url("/redirect/3"),))
    assert run.status == "completed"
    assert run.result["status"] == 200 and json.loads(run.result["body"])["path"] == "/echo"
    capped = _run(http.dsn(), "df.http(%s, 'GET')", (http.server.url("/redirect/5"),))
    assert capped.result["status"] == 302 and capped.result["ok"] is False


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("other", "Blocked: '127.0.0.1' is a non-public address. Allow it with --http-allow."),
        (
            "http://169.254.169.254/latest/meta-data/",
            "Blocked: '169.254.169.254' is a non-public address. Allow it with --http-allow.",
        ),
    ],
)
def test_redirects_to_refused_destinations(http: Setup, target: str, refused: str) -> None:
    if target == "other":
        target = http.other.url("/echo")
    hop = http.server.url(f"/redirect/1?to={target}")
    error = _error(_run(http.dsn(), "df.http(%s, 'GET')", (hop,)))
    assert error == f"{refused} (redirected from {redact_url(hop)})"


def test_names_resolving_to_loopback_are_refused(http: Setup) -> None:
    url = f"http://localhost:{http.server.port}/echo"
    error = _error(_run(http.dsn(), "df.http(%s, 'GET')", (url,)))
    assert error.startswith("Blocked: 'localhost' resolves to a non-public address (")
    assert error.endswith("). Allow it with --http-allow.")


def test_http_needs_execute_granted_by_include_http(http: Setup, cluster: Cluster) -> None:
    url = http.server.url("/echo")
    with psycopg.connect(http.dsn(), autocommit=True) as conn:
        graph = conn.execute("SELECT df.http(%s, 'GET')", (url,)).fetchone()
    assert graph is not None
    plain = http.dsn(PLAIN_ROLE)
    with psycopg.connect(plain, autocommit=True) as conn, pytest.raises(psycopg.Error):
        conn.execute("SELECT df.http(%s, 'GET')", (url,))  # the builder is not granted either
    assert _error(_run(plain, "%s", (graph[0],))) == (
        f"Blocked: role '{PLAIN_ROLE}' does not have EXECUTE privilege on df.http(). Grant "
        f"EXECUTE ON FUNCTION df.http(text,text,text,jsonb,integer) TO {PLAIN_ROLE} to allow "
        "HTTP requests."
    )
    with psycopg.connect(http.proxy.dsn(dbname=DATABASE), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s, include_http => true)", (PLAIN_ROLE,))
    try:
        run = _run(plain, "%s", (graph[0],))
        assert run.status == "completed" and run.result["status"] == 200
    finally:
        with psycopg.connect(http.proxy.dsn(dbname=DATABASE), autocommit=True) as conn:
            conn.execute("SELECT df.revoke_usage(%s)", (PLAIN_ROLE,))
            conn.execute("SELECT df.grant_usage(%s)", (PLAIN_ROLE,))


def test_multipart_reaches_the_server_with_its_parts(http: Setup) -> None:
    meta = base64.b64encode(b'{"kind":"test"}').decode()
    parts = [
        {"name": "meta", "data_b64": meta[:8] + "\n " + meta[8:]},  # whitespace is allowed
        {
            "name": "{part}",
            "filename": "f-$blob-x.bin",
            "content_type": "application/octet-stream",
            "data_b64": "$blob",
        },
    ]
    with psycopg.connect(http.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.setvar('part', 'upload')")
        instance = _start(
            http.dsn(),
            "'SELECT encode(''\\x000102''::bytea, ''base64'') AS b' |=> 'blob' ~> "
            "df.http_multipart(%s, 'POST', %s::jsonb, '{\"Content-Type\": \"text/plain\"}')",
            (http.server.url("/multipart"), json.dumps(parts)),
        )
    run = _await(http.dsn(), instance)
    assert run.status == "completed", run.nodes
    assert json.loads(run.result["body"]) == [
        {"name": "meta", "filename": None, "content_type": None, "data": b'{"kind":"test"}'.hex()},
        {
            "name": "upload",
            "filename": "f-AAEC-x.bin",
            "content_type": "application/octet-stream",
            "data": "000102",
        },
    ]


def test_substitution_into_url_body_and_headers(http: Setup) -> None:
    with psycopg.connect(http.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.setvar('seg', 'abc')")
        instance = _start(
            http.dsn(),
            "'SELECT 42 AS id, ''O''''Neil'' AS name' |=> 'r' ~> "
            "df.http(%s, 'PUT', %s, '{\"X-Id\": \"$r.id\", \"X-Num\": 5}'), 'lbl'",
            (
                http.server.url("/echo?seg={seg}&id=$r.id"),
                '{"name": "$r.name", "l": "{sys_label}"}',
            ),
        )
    run = _await(http.dsn(), instance)
    assert run.status == "completed", run.nodes
    sent = json.loads(run.result["body"])
    assert sent["method"] == "PUT" and sent["query"] == {"seg": "abc", "id": "42"}
    assert json.loads(sent["body"]) == {"name": "O'Neil", "l": "lbl"}
    assert sent["headers"]["X-Id"] == "42" and "X-Num" not in sent["headers"]
    assert "Content-Type" not in sent["headers"]
    missing = _run(
        http.dsn(), "'SELECT 1 AS a' |=> 'r' ~> df.http(%s)", (http.server.url("/echo?x=$r.nope"),)
    )
    assert _error(missing) == "$r.nope: result has no field 'nope' (available: a)"


def test_a_race_abandons_a_slow_request(http: Setup) -> None:
    url = http.server.url("/slow?s=20")
    run = _run(http.dsn(), "df.http(%s, 'GET', timeout_seconds => 60) | df.sleep(1)", (url,))
    assert run.status == "completed" and run.result == {"slept": True, "seconds": 1}
