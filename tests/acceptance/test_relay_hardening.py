"""Hardening: what unauthenticated, slow, numerous or deep-statement clients can do to
pgdurable (the real process, in front of real clusters)."""

from __future__ import annotations

import re
import select
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.certs import self_signed
from tests.support.metrics import read_metrics, rss_bytes
from tests.support.proxy import ProxyProcess
from tests.support.rawwire import Message, RawConnection, query, startup_packet

MIB = 1024 * 1024
CACHE_GAUGES = ("candidates_total", "classified_total", "classify_cache_entries")


def _send_ignoring_hangup(conn: RawConnection, data: bytes) -> None:
    try:
        conn.send(data)
    except OSError:  # the server may hang up before all of it went out
        pass


def _drain(conn: RawConnection) -> list[Message]:
    seen: list[Message] = []
    try:
        while (msg := conn.read_message()) is not None:
            seen.append(msg)
    except OSError:
        pass
    return seen


def test_unauthenticated_big_queries_are_neither_held_nor_classified(
    managed_proxy: ProxyProcess,
) -> None:
    """A made-up user on a password-only cluster sends 15 MB candidate queries mid-login."""
    assert managed_proxy.process is not None
    pid = managed_proxy.process.pid
    before = read_metrics(managed_proxy.http_port)
    base_rss = rss_bytes(pid)
    samples = [base_rss]
    done = threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(pid, samples, done))
    sampler.start()
    big = query("SELECT df.start($$" + "x" * (15 * MIB) + "$$)")
    try:
        for n in range(20):
            conn = RawConnection(managed_proxy.port)
            conn.send(startup_packet(f"made_up_user_{n}"))
            auth = conn.read_message()
            assert auth is not None and auth.type == "R"  # SASL: waiting for a password
            _send_ignoring_hangup(conn, big)
            replies = _drain(conn)
            assert all(m.type == "E" for m in replies), replies
            conn.close()
    finally:
        done.set()
        sampler.join()
    after = read_metrics(managed_proxy.http_port)
    assert max(samples) - base_rss < 64 * MIB, (base_rss, max(samples))
    for name in CACHE_GAUGES:
        assert after.get(name, 0) == before.get(name, 0), name


def _sample_rss(pid: int, samples: list[int], done: threading.Event) -> None:
    """Every 10 ms until `done`: a message held whole, even briefly, shows."""
    while not done.wait(0.01):
        samples.append(rss_bytes(pid))


@pytest.fixture
def short_auth_proxy(cluster: Cluster, tmp_path: Path) -> Iterator[ProxyProcess]:
    args = ["--authentication-timeout", "1"]
    process = ProxyProcess(cluster.dsn(), args, log_path=tmp_path / "pgdurable.log").start()
    yield process
    process.stop()


def _expect_auth_timeout(conn: RawConnection, started: float) -> None:
    messages = _drain(conn)
    elapsed = time.monotonic() - started
    assert messages and messages[-1].type == "E", messages
    assert messages[-1].fields["C"] == "57014", messages[-1].fields
    assert messages[-1].fields["S"] == "FATAL"
    assert 0.9 < elapsed < 3.0, elapsed


def test_slow_loris_startup_is_cut_off(short_auth_proxy: ProxyProcess) -> None:
    """One byte of the startup packet every 0.2 s: cut off after the 1 s timeout."""
    conn = RawConnection(short_auth_proxy.port)
    started = time.monotonic()
    for byte in startup_packet():  # ~40 bytes: 8 s if never cut off
        _send_ignoring_hangup(conn, bytes([byte]))
        readable, _, _ = select.select([conn.sock], [], [], 0.2)
        if readable:
            break
    _expect_auth_timeout(conn, started)


def test_login_left_unfinished_is_cut_off(short_auth_proxy: ProxyProcess) -> None:
    """A password login that never sends its password ends at the timeout too."""
    conn = RawConnection(short_auth_proxy.port)
    started = time.monotonic()
    conn.send(startup_packet("scram_user"))
    auth = conn.read_message()
    assert auth is not None and auth.type == "R"
    _expect_auth_timeout(conn, started)


def test_tls_handshake_left_unfinished_is_cut_off(cluster: Cluster, tmp_path: Path) -> None:
    """SSLRequest answered 'S', then no ClientHello: the connection is dropped at the timeout."""
    cert, key = self_signed(tmp_path)
    log_path = tmp_path / "pgdurable.log"
    args = ["--authentication-timeout", "1", "--tls-cert", str(cert), "--tls-key", str(key)]
    proxy = ProxyProcess(cluster.dsn(), args, log_path=log_path).start()
    try:
        conn = RawConnection(proxy.port)
        started = time.monotonic()
        conn.send(struct.pack("!II", 8, 80877103))
        assert conn.sock.recv(1) == b"S"
        assert _drain(conn) == []  # closed without a word: nothing can be said in plaintext
        assert 0.9 < time.monotonic() - started < 3.0
        with psycopg.connect(proxy.dsn(), sslmode="require", autocommit=True) as healthy:
            assert healthy.execute("SELECT 1").fetchone() == (1,)
        deadline = time.monotonic() + 3  # the dropped connection is forgotten too
        while read_metrics(proxy.http_port)["sessions_active"] != 0:
            assert time.monotonic() < deadline, "a session outlived its connection"
            time.sleep(0.05)
    finally:
        proxy.stop()
    assert "Traceback" not in log_path.read_text()


def test_idle_session_outlives_the_authentication_timeout(
    short_auth_proxy: ProxyProcess,
) -> None:
    with psycopg.connect(short_auth_proxy.dsn(), autocommit=True) as conn:
        time.sleep(1.5)
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)


@pytest.fixture
def three_client_proxy(cluster: Cluster, tmp_path: Path) -> Iterator[ProxyProcess]:
    args = ["--max-client-connections", "3"]
    process = ProxyProcess(cluster.dsn(), args, log_path=tmp_path / "pgdurable.log").start()
    yield process
    process.stop()


def _refused(port: int) -> dict[str, str]:
    conn = RawConnection(port)
    conn.send(startup_packet())
    messages = _drain(conn)
    conn.close()
    assert [m.type for m in messages] == ["E"], messages
    return messages[0].fields


def test_too_many_clients_get_53300(three_client_proxy: ProxyProcess) -> None:
    proxy = three_client_proxy
    sessions = [psycopg.connect(proxy.dsn(), autocommit=True) for _ in range(3)]
    fields = _refused(proxy.port)
    assert (fields["S"], fields["C"], fields["M"]) == (
        "FATAL",
        "53300",
        "sorry, too many clients already",
    )
    with pytest.raises(psycopg.OperationalError, match="sorry, too many clients already"):
        psycopg.connect(proxy.dsn())
    for n, conn in enumerate(sessions):  # the sessions inside the limit carry on
        assert conn.execute("SELECT %s::int", (n,)).fetchone() == (n,)
    sessions.pop().close()
    deadline = time.monotonic() + 5
    while True:  # the freed slot is taken as soon as pgdurable saw the close
        try:
            sessions.append(psycopg.connect(proxy.dsn(), autocommit=True))
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert sessions[-1].execute("SELECT 'reused'").fetchone() == ("reused",)
    assert read_metrics(proxy.http_port)["clients_refused_total"] >= 2
    for conn in sessions:
        conn.close()


def test_fd_soft_limit_is_raised_to_the_hard_limit(cluster: Cluster, tmp_path: Path) -> None:
    log_path = tmp_path / "pgdurable.log"
    proxy = ProxyProcess(cluster.dsn(), log_path=log_path, soft_fd_limit=256).start()
    try:
        assert proxy.process is not None
        limits = Path(f"/proc/{proxy.process.pid}/limits").read_text()
        found = re.search(r"^Max open files\s+(\S+)\s+(\S+)", limits, re.MULTILINE)
        assert found is not None, limits
        soft, hard = found.groups()
        assert soft == hard and soft != "256", limits
        assert f"event=fd_limit soft={soft} hard={hard}" in log_path.read_text()
    finally:
        proxy.stop()


def test_client_limit_is_lowered_to_what_the_fd_limit_serves(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Hard limit 256: 1000 clients would need ~3,000 descriptors; pgdurable says so."""
    log_path = tmp_path / "pgdurable.log"
    proxy = ProxyProcess(
        cluster.dsn(), log_path=log_path, soft_fd_limit=256, hard_fd_limit=256
    ).start()
    try:
        log = log_path.read_text()
        assert "event=max_client_connections_lowered configured=1000 effective=60" in log, log
        sessions = [psycopg.connect(proxy.dsn(), autocommit=True) for _ in range(60)]
        assert _refused(proxy.port)["C"] == "53300"
        assert sessions[-1].execute("SELECT 1").fetchone() == (1,)
        for conn in sessions:
            conn.close()
    finally:
        proxy.stop()


DEEP_STATEMENTS = {
    "plus_800_terms": ("SELECT df.version(), " + "+".join(["1"] * 800), 800),
    "coalesce_400_deep": ("SELECT df.version(), " + "coalesce(" * 400 + "7" + ")" * 400, 7),
}


@pytest.mark.parametrize("protocol", ["extended", "simple"])
@pytest.mark.parametrize("name", sorted(DEEP_STATEMENTS))
def test_deep_statement_passes_through(proxy: ProxyProcess, name: str, protocol: str) -> None:
    sql, expected = DEEP_STATEMENTS[name]
    cursor_factory = psycopg.ClientCursor if protocol == "simple" else psycopg.Cursor
    with psycopg.connect(proxy.dsn(), autocommit=True, cursor_factory=cursor_factory) as conn:
        version, value = conn.execute(sql).fetchone()  # type: ignore[misc]
        assert isinstance(version, str) and value == expected
        assert conn.execute("SELECT 'usable'").fetchone() == ("usable",)


MALFORMED_PARSES = {
    "no_terminators": b"SELECT df.version()",
    "no_sql_terminator": b"\0SELECT df.version()",
    "name_only": b"df_statement\0",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_PARSES))
def test_malformed_parse_naming_df_gets_the_servers_error(proxy: ProxyProcess, name: str) -> None:
    assert proxy.log_path is not None
    log_offset = proxy.log_path.stat().st_size
    conn = RawConnection(proxy.port)
    assert conn.login()[-1].type == "Z"
    body = MALFORMED_PARSES[name]
    conn.send(b"P" + struct.pack("!I", len(body) + 4) + body + b"S\0\0\0\4")
    replies = conn.read_until("Z")
    assert [m.type for m in replies] == ["E", "Z"], replies
    assert replies[0].fields["C"] == "08P01" and replies[0].fields["S"] == "ERROR"
    conn.send(query("SELECT df.version()"))
    assert [m.type for m in conn.read_until("Z")] == ["T", "D", "C", "Z"]
    conn.close()
    assert "Traceback" not in proxy.log_path.read_text()[log_offset:]


def test_huge_dense_df_statement_does_not_stall_other_sessions(proxy: ProxyProcess) -> None:
    """800 kB of `SELECT df.version(), 1,1,…`: classifying it must not hold the event loop."""
    big = "SELECT df.version(), " + ",".join(["1"] * 400_000)
    sqlstates: list[str | None] = []

    def send() -> None:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            try:
                conn.execute(big)
            except psycopg.Error as exc:
                sqlstates.append(exc.sqlstate)

    with psycopg.connect(proxy.dsn(), autocommit=True) as other:
        other.execute("SELECT 1")
        sender = threading.Thread(target=send)
        sender.start()
        worst = 0.0
        while sender.is_alive():
            started = time.monotonic()
            other.execute("SELECT 1")
            worst = max(worst, time.monotonic() - started)
        sender.join()
    assert sqlstates == ["54011"]  # PostgreSQL: target lists can have at most 1664 entries
    assert worst < 0.5, worst
