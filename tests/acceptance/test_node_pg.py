"""node-postgres (`pg` 8) through pgdurable: simple and extended queries, named statements,
transactions, errors, a pool, pipeline mode, LISTEN/NOTIFY and SCRAM login.

`pg` is installed into tests/clients/node (node_modules is gitignored) on first use. All
cases run in one node process per PostgreSQL flavor (tests/clients/node/matrix.js); each
test below asserts on that run's report.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.client_matrix import MatrixRun, login_args, run_matrix
from tests.support.proxy import ProxyProcess

NODE_DIR = Path(__file__).resolve().parents[1] / "clients" / "node"
PG_PACKAGE = NODE_DIR / "node_modules" / "pg" / "package.json"
# npm's words for "could not reach the registry".
NETWORK_ERRORS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "network request",
    "request to https://",
)


@pytest.fixture(scope="session")
def node_pg() -> Path:
    """tests/clients/node with node-postgres 8 installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the node-postgres acceptance tests")
    with _install_lock():  # the two test workers may both get here on a fresh clone
        _install_node_pg(npm)
    version = json.loads(PG_PACKAGE.read_text())["version"]
    assert version.split(".")[0] == "8", f"expected node-postgres 8.x, found {version}"
    return NODE_DIR


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _install_node_pg(npm: str) -> None:
    """`npm install` in tests/clients/node unless node-postgres is there already."""
    if not PG_PACKAGE.is_file():
        cmd = [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--fetch-retries=1",
            "--fetch-timeout=60000",
        ]
        try:
            proc = subprocess.run(
                cmd,
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("`npm install` of node-postgres timed out (no network to the registry?)")
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            if any(marker in output for marker in NETWORK_ERRORS):
                pytest.skip(f"`npm install` could not reach the registry:\n{output[-1500:]}")
            pytest.fail(f"`npm install` failed (exit {proc.returncode}):\n{output[-3000:]}")


@pytest.fixture(scope="module")
def node(proxy: ProxyProcess, node_pg: Path) -> MatrixRun:
    """One run of matrix.js against the proxy of the current flavor."""
    node = shutil.which("node")
    assert node is not None
    cmd = [node, str(node_pg / "matrix.js"), str(proxy.port), *login_args()]
    return run_matrix(cmd, cwd=node_pg, timeout=90)


def test_every_case_passed(node: MatrixRun) -> None:
    node.assert_clean()
    assert node.values["driver"].startswith("8.")


def test_scram_login_and_auth_matrix(node: MatrixRun) -> None:
    auth = node.case("auth")
    assert auth["scram_user"] == "scram_user/scram_user"
    assert auth["md5_user"] == "md5_user/md5_user"
    assert auth["trust_user"] == "trust_user/trust_user"
    assert auth["wrong_password.code"] == "28P01"


def test_simple_queries(node: MatrixRun) -> None:
    simple = node.case("simple")
    assert json.loads(simple["row"]) == [{"a": 1, "b": "x", "c": None, "d": 2.5, "e": "ünï"}]
    assert json.loads(simple["multi"]) == [[{"a": 1}], [{"b": 2, "c": 3}]]
    assert simple["big"] == "20000/200010000/4000000"


def test_parameterized_queries_use_unnamed_statements(node: MatrixRun) -> None:
    params = node.case("params")
    assert params["runs"] == "10"
    assert params["named_on_server"] == "0"


def test_named_statements_reused(node: MatrixRun) -> None:
    named = node.case("named")
    assert named["results"] == "2,4,6,8,10,12,14,16"
    assert named["on_server"] == "q1,q2"
    assert named["binary"] == "42,100"


def test_transaction_rollback(node: MatrixRun) -> None:
    assert node.case("tx")["rows"] == "1,2"


def test_errors_then_continued_use(node: MatrixRun) -> None:
    errors = node.case("errors")
    assert errors["simple"] == "22012"
    assert errors["extended"] == "22P02"
    assert errors["syntax"] == "42601"
    assert errors["aborted"] == "25P02"
    assert errors["rows_after_rollback"] == "0"
    assert errors["named_after_error"] == "ok"


def test_pool_concurrent_queries(node: MatrixRun) -> None:
    pool = node.case("pool")
    assert pool["queries"] == "40"
    assert 1 <= int(pool["backends"]) <= 4


def test_pipeline_mode(node: MatrixRun) -> None:
    pipeline = node.case("pipeline")
    if "skipped" in pipeline:
        pytest.skip(pipeline["skipped"])
    expected = [str(k) if k != 15 else "error:22012" for k in range(30)]
    assert pipeline["results"].split(",") == expected


def test_listen_notify(node: MatrixRun) -> None:
    assert node.case("notify")["payload"] == "node_matrix:hello through the relay"


def test_many_short_sessions(node: MatrixRun) -> None:
    assert node.case("terminate")["sessions"] == "20"


def test_no_error_events_after_end(node: MatrixRun) -> None:
    """A client that ends its session normally never sees an error."""
    node.case("terminate")
    events = [v for k, v in node.values.items() if k.startswith("client_error_event.")]
    assert node.values.get("client_error_events") == "0", events


def test_terminate_is_answered_by_close_only(proxy: ProxyProcess) -> None:
    """Terminate is answered by a close only, never by an error about the upstream."""
    body = struct.pack("!I", 196608) + b"user\0trust_user\0database\0postgres\0\0"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        received = b""
        while not received.endswith(b"Z\0\0\0\x05I"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed during startup: {received!r}"
            received += chunk
        sock.sendall(b"X\0\0\0\x04")
        after = b""
        while chunk := sock.recv(65536):
            after += chunk
    assert after == b"", f"bytes after Terminate: {after!r}"
