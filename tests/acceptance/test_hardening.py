"""Hardening: what unauthenticated, slow, numerous or deep-statement clients can do to
pgdurable (the real process, in front of real clusters)."""

from __future__ import annotations

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
    base_rss = peak_rss = rss_bytes(pid)
    big = query("SELECT df.start($$" + "x" * (15 * MIB) + "$$)")
    for n in range(8):
        conn = RawConnection(managed_proxy.port)
        conn.send(startup_packet(f"made_up_user_{n}"))
        auth = conn.read_message()
        assert auth is not None and auth.type == "R"  # SASL: the server waits for a password
        _send_ignoring_hangup(conn, big)
        replies = _drain(conn)
        assert all(m.type == "E" for m in replies), replies
        conn.close()
        peak_rss = max(peak_rss, rss_bytes(pid))
    after = read_metrics(managed_proxy.http_port)
    assert peak_rss - base_rss < 64 * MIB, (base_rss, peak_rss)
    for name in CACHE_GAUGES:
        assert after.get(name, 0) == before.get(name, 0), name
