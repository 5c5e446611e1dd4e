"""The pgdurable process from the outside: TLS, SIGTERM, upstream death, CLI errors."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster, free_port, wheel_bindir
from tests.support.certs import self_signed
from tests.support.clusters import FLAVORS, make_cluster, remove_cluster
from tests.support.proxy import ProxyProcess
from tests.support.workflows import start_and_await


def _ssl_capable(bindir: Path) -> bool:
    configure = subprocess.run(
        [str(bindir / "pg_config"), "--configure"], capture_output=True, text=True
    ).stdout
    return "--with-ssl" in configure or "--with-openssl" in configure


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster with ssl=on when some PostgreSQL build here supports it (else plain), and
    a Unix socket (in a short path: socket paths are limited to about 100 bytes)."""
    root = tmp_path_factory.mktemp("tls-cluster")
    capable = [f for f in FLAVORS if f.available and _ssl_capable(f.bindir)]
    cluster = make_cluster(capable[0] if capable else FLAVORS[0], root)
    sockets = Path(tempfile.mkdtemp(prefix="pgd-", dir="/tmp"))
    sockets.chmod(0o777)  # the server may run as another OS user
    cluster.settings = {**cluster.settings, "unix_socket_directories": str(sockets)}
    if capable:
        cert, key = self_signed(root)
        for path in (cert, key):
            target = cluster.datadir / path.name
            shutil.copy(path, target)
            target.chmod(0o600)
            if cluster.os_user:
                entry = pwd.getpwnam(cluster.os_user)
                os.chown(target, entry.pw_uid, entry.pw_gid)
        cluster.settings = {
            **cluster.settings,
            "ssl": "on",
            "ssl_cert_file": cert.name,
            "ssl_key_file": key.name,
        }
    cluster.restart()
    yield cluster
    remove_cluster(cluster)
    shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture
def own_proxy(tls_cluster: Cluster, tmp_path: Path) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(
        tls_cluster.dsn() + "?sslmode=disable",
        log_path=tmp_path / "log",
        extra_args=["--shutdown-timeout", "3"],
    ).start()
    yield proxy
    proxy.kill()


def _upstream_ssl(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        return bool(row and row[0])


def _steps_run_over_the_socket(uri: str, owner: str) -> None:
    """PostgreSQL is reached over its Unix socket: by this session's relay and by the
    engine's step connections (which log in as the workflow's owner). `owner` exists
    already or is created here."""
    with psycopg.connect(uri, autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_addr() IS NULL").fetchone() == (True,)
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {owner} LOGIN")
        conn.execute("SELECT df.grant_usage(%s)", (owner,))
    with psycopg.connect(uri.replace("postgres@", f"{owner}@"), autocommit=True) as conn:
        started = conn.execute(
            "SELECT df.start('SELECT inet_server_addr() IS NULL AS over_socket')"
        ).fetchone()
        assert started is not None
        done = conn.execute("SELECT df.await_instance(%s, 20)", (started[0],)).fetchone()
        result = conn.execute("SELECT df.result(%s)::jsonb", (started[0],)).fetchone()
    assert done == ("completed",)
    assert result is not None and result[0]["rows"] == [{"over_socket": True}]


def test_an_upstream_unix_socket_serves_the_relay_and_the_engine(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    """--upstream may name a socket directory: sessions and the engine's connections (its
    own and each step's, as the owner) all go through it."""
    proxy = ProxyProcess(tls_cluster.socket_dsn(), log_path=tmp_path / "log").start()
    try:
        _steps_run_over_the_socket(proxy.dsn(), "trust_user")
    finally:
        proxy.kill()


@pytest.mark.parametrize(("sslmode", "expected"), [("require", True), ("disable", False)])
def test_upstream_tls_follows_sslmode(
    tls_cluster: Cluster, tmp_path: Path, sslmode: str, expected: bool
) -> None:
    if tls_cluster.settings.get("ssl") != "on":
        pytest.skip("no PostgreSQL build with SSL support on this machine")
    proxy = ProxyProcess(f"{tls_cluster.dsn()}?sslmode={sslmode}").start()
    try:
        assert _upstream_ssl(proxy.dsn("scram_user", "scram-secret")) is expected
    finally:
        proxy.stop()


def test_steps_over_upstream_tls_run_and_their_results_are_metered(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    """The engine's step connections use TLS too, and the result meter sits behind it."""
    if tls_cluster.settings.get("ssl") != "on":
        pytest.skip("no PostgreSQL build with SSL support on this machine")
    args = ["--max-result-bytes", "100000"]
    proxy = ProxyProcess(f"{tls_cluster.dsn()}?sslmode=require", extra_args=args).start()
    try:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage('trust_user')")
        dsn = proxy.dsn("trust_user")
        graph = "'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'"
        instance, status = start_and_await(dsn, graph)
        with psycopg.connect(dsn) as conn:
            result = conn.execute("SELECT df.result(%s)::jsonb", (instance,)).fetchone()
        assert status == "completed" and result == ({"rows": [{"ssl": True}], "row_count": 1},)
        _, status = start_and_await(dsn, "'SELECT repeat(''x'', 10000000) AS big'")
        assert status == "failed"
    finally:
        proxy.stop()


def test_client_tls_with_scram(tls_cluster: Cluster, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "proxy")
    proxy = ProxyProcess(
        tls_cluster.dsn() + "?sslmode=disable",
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
    ).start()
    try:
        dsn = proxy.dsn("scram_user", "scram-secret") + "?sslmode=require"
        with psycopg.connect(dsn) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT current_user").fetchone() == ("scram_user",)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.dsn() + "?sslmode=verify-full&sslrootcert=/nonexistent")
    finally:
        proxy.stop()


def test_sigterm_drains_sessions_then_exits(own_proxy: ProxyProcess) -> None:
    with psycopg.connect(own_proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1")
        own_proxy.signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(own_proxy.dsn(), connect_timeout=2)
        assert conn.execute("SELECT 'still served'").fetchone() == ("still served",)
    assert own_proxy.process is not None
    assert own_proxy.process.wait(10) == 0


def test_sigterm_closes_lingering_sessions_after_timeout(own_proxy: ProxyProcess) -> None:
    conn = psycopg.connect(own_proxy.dsn(), autocommit=True)
    started = time.monotonic()
    own_proxy.signal(signal.SIGTERM)
    assert own_proxy.process is not None
    assert own_proxy.process.wait(15) == 0
    assert 2.5 < time.monotonic() - started < 10
    with pytest.raises(psycopg.OperationalError) as info:
        conn.execute("SELECT 1")
    assert "shutdown" in str(info.value) or "closed" in str(info.value)
    conn.close()


def test_backend_terminated_passes_servers_fatal(
    own_proxy: ProxyProcess, tls_cluster: Cluster
) -> None:
    with (
        psycopg.connect(own_proxy.dsn(), autocommit=True) as victim,
        psycopg.connect(own_proxy.dsn(), autocommit=True) as bystander,
        psycopg.connect(tls_cluster.dsn(), autocommit=True) as admin,
    ):
        row = victim.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        with pytest.raises(psycopg.OperationalError) as info:
            victim.execute("SELECT 1")
        assert "terminating connection due to administrator command" in str(info.value)
        assert bystander.execute("SELECT 'carry on'").fetchone() == ("carry on",)


def test_upstream_killed_gives_fatal_and_proxy_survives(
    own_proxy: ProxyProcess, tls_cluster: Cluster
) -> None:
    victim = psycopg.connect(own_proxy.dsn(), autocommit=True)
    row = victim.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    os.kill(row[0], signal.SIGKILL)  # the backend dies without a word; postmaster recovers
    with pytest.raises(psycopg.OperationalError) as info:
        victim.execute("SELECT 1")
    assert "lost" in str(info.value) or "closed" in str(info.value)
    victim.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(own_proxy.dsn(), connect_timeout=3) as conn:
                assert conn.execute("SELECT 'recovered'").fetchone() == ("recovered",)
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgdurable_proxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["--upstream", "mysql://nope"],
        ["--upstream", "postgresql://u@h:notaport/db"],
        ["--upstream", "host=x sslmode=bogus"],
        ["--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"],
    ],
)
def test_bad_arguments_exit_with_one_line(args: list[str]) -> None:
    result = _run_cli(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgdurable: error:"), result.stderr


def test_an_unreachable_upstream_is_waited_for_and_said_instead_of_ready() -> None:
    """pgdurable says every few seconds why it waits, never "ready"; /healthz says it is
    alive and /readyz (503) what is wrong."""
    upstream_port, http_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "pgdurable_proxy",
        "--upstream",
        f"postgresql://postgres@127.0.0.1:{upstream_port}/postgres",
        "--port",
        str(free_port()),
        "--http-port",
        str(http_port),
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        waiting = [process.stderr.readline()]  # after 3 s, then every 3 s
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz") as alive:
            assert alive.status == 200
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz")
        assert not_ready.value.code == 503
        checks = json.loads(not_ready.value.read())["checks"]
    finally:
        process.terminate()
        stdout, _ = process.communicate(timeout=30)
    expected = f"pgdurable: waiting for PostgreSQL at 127.0.0.1:{upstream_port}: "
    assert all(line.startswith(expected) for line in waiting), waiting
    assert "refused" in waiting[0].lower(), waiting
    assert "ready" not in stdout, stdout
    assert checks["postgres"].startswith("not reachable"), checks
    assert checks["catalog"] == "not installed yet" and checks["engine"] == "starting", checks
    assert process.returncode == 0


def test_embedded_server_starts_stops_and_keeps_data(tmp_path: Path) -> None:
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="pgd-embedded-", dir="/tmp"))  # a socket fits
    cmd = [
        sys.executable,
        "-m",
        "pgdurable_proxy",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]
    try:
        for round_no in range(2):
            process = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert process.stdout is not None
            lines = [process.stdout.readline(), process.stdout.readline()]
            assert lines[0].startswith("pgdurable ready"), (lines, process.stderr)
            uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            assert f'psql "{uri}"' in lines[1]
            with psycopg.connect(uri, autocommit=True) as conn:
                if round_no == 0:
                    conn.execute("CREATE TABLE kept (v text)")
                    conn.execute("INSERT INTO kept VALUES ('survives restart')")
                else:
                    assert conn.execute("SELECT v FROM kept").fetchone() == ("survives restart",)
            if round_no == 0:
                _steps_run_over_the_socket(uri, "embedded_owner")
                _a_second_pgdurable_is_refused(cmd, data_dir, port, process.pid, tmp_path)
                with psycopg.connect(uri) as conn:  # the first one still serves
                    assert conn.execute("SELECT v FROM kept").fetchone() == ("survives restart",)
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
            status = subprocess.run(
                [str(wheel_bindir() / "pg_ctl"), "-D", str(data_dir / "pgdata"), "status"],
                capture_output=True,
                text=True,
                user="embedded_postgres" if os.geteuid() == 0 else None,
            )
            assert status.returncode == 3, "the embedded PostgreSQL must stop with pgdurable"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _a_second_pgdurable_is_refused(
    cmd: list[str], data_dir: Path, port: int, first_pid: int, tmp_path: Path
) -> None:
    """On the same data directory (another port), then on the same port (another data
    directory): one line, exit status 2, before anything is touched."""
    same_dir = [*cmd[:-1], str(free_port())]
    other_dir = tmp_path / "other-data"
    same_port = [*cmd[:3], "--data-dir", str(other_dir), "--port", str(port)]
    for second, expected in (
        (same_dir, f"is in use by another pgdurable (pid {first_pid})"),
        (same_port, f"cannot listen on 127.0.0.1:{port}: Address already in use"),
    ):
        result = subprocess.run(second, capture_output=True, text=True, timeout=30)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (other_dir / "pgdata").exists(), "initdb ran although the port was taken"
