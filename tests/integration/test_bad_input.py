"""Bad client input: 08P01 where the protocol allows one; the process and others carry on."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.proxy import ProxyProcess
from tests.support.rawwire import RawConnection, query, startup_packet


@pytest.fixture
def healthy(proxy: ProxyProcess) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A normal session that must keep working while bad ones come and go."""
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1")
        yield conn
        assert conn.execute("SELECT 'healthy'").fetchone() == ("healthy",)


def _expect_fatal_08p01(conn: RawConnection) -> dict[str, str]:
    messages = conn.read_until("E")
    assert messages and messages[-1].type == "E", messages
    fields = messages[-1].fields
    assert fields["C"] == "08P01" and fields["S"] == "FATAL", fields
    assert conn.read_message() is None  # then the connection is closed
    return fields


BAD_STARTUPS = {
    "garbage": b"\x47\x45\x54\x20/ HTTP/1.1\r\n\r\n",  # an HTTP request
    "oversize": struct.pack("!II", 20_000, 196608) + b"x" * 100,
    "too_short": struct.pack("!II", 4, 196608),
    "protocol_2": struct.pack("!II", 8, 0x00020000),
    "no_terminator": struct.pack("!II", 16, 196608) + b"user\0bob",
    "odd_params": struct.pack("!II", 14, 196608) + b"user\0\0",
}


@pytest.mark.parametrize("name", sorted(BAD_STARTUPS))
def test_bad_startup_packet(proxy: ProxyProcess, healthy: object, name: str) -> None:
    conn = RawConnection(proxy.port)
    conn.send(BAD_STARTUPS[name])
    _expect_fatal_08p01(conn)


BAD_MESSAGES = {
    "unknown_type": b"Z" + struct.pack("!I", 4),
    "length_below_4": b"Q" + struct.pack("!I", 2),
    "small_type_too_long": b"S" + struct.pack("!I", 50_000) + b"\0" * 10,
    "length_over_1gb": b"Q" + struct.pack("!I", 0x7FFFFFFF),
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_bad_message_after_login(proxy: ProxyProcess, healthy: object, name: str) -> None:
    conn = RawConnection(proxy.port)
    assert conn.login()[-1].type == "Z"
    conn.send(BAD_MESSAGES[name])
    fields = _expect_fatal_08p01(conn)
    assert "invalid" in fields["M"]


def test_client_closes_mid_message(
    proxy: ProxyProcess, healthy: psycopg.Connection[tuple[object, ...]]
) -> None:
    for _ in range(20):
        conn = RawConnection(proxy.port)
        conn.login(application_name="half-message")
        whole = query("SELECT 'never finished'")
        conn.send(whole[: len(whole) // 2])
        conn.close()
    for _ in range(50):
        row = healthy.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'half-message'"
        ).fetchone()
        if row == (0,):
            break
        import time

        time.sleep(0.1)
    assert row == (0,)


def test_client_closes_during_startup(proxy: ProxyProcess, healthy: object) -> None:
    for cut in (2, 6, 20):
        conn = RawConnection(proxy.port)
        conn.send(startup_packet()[:cut])
        conn.close()


def test_data_after_ssl_request_is_refused(proxy: ProxyProcess, healthy: object) -> None:
    conn = RawConnection(proxy.port)
    conn.send(struct.pack("!II", 8, 80877103) + startup_packet())
    _expect_fatal_08p01(conn)


def test_gssenc_then_ssl_then_startup(proxy: ProxyProcess) -> None:
    conn = RawConnection(proxy.port)
    conn.send(struct.pack("!II", 8, 80877104))
    assert conn.sock.recv(1) == b"N"
    conn.send(struct.pack("!II", 8, 80877103))
    assert conn.sock.recv(1) == b"N"  # no --tls-cert on this proxy
    assert conn.login()[-1].type == "Z"
    conn.send(query("SELECT 42"))
    messages = conn.read_until("Z")
    assert [m.type for m in messages] == ["T", "D", "C", "Z"]
    conn.close()
