"""The benchmarks' latency link (tests/bench/link): bytes pass intact and in order both ways,
and every round trip through it costs at least the configured rtt, to an echo server and
to PostgreSQL."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.bench.link.process import LinkProcess

DELAY_MS = 10.0  # each way
RTT_S = 2 * DELAY_MS / 1000


class EchoServer:
    """A thread per connection that sends back what it reads and keeps a copy of it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytearray] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            copy = bytearray()
            self.received.append(copy)
            threading.Thread(target=self._echo, args=(conn, copy), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket, copy: bytearray) -> None:
        with conn:
            while data := conn.recv(65536):
                copy += data
                conn.sendall(data)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.sock.close()


def _link(port: int, stats: Path) -> LinkProcess:
    return LinkProcess(upstream_port=port, delay_ms=DELAY_MS, stats_path=stats).start()


@pytest.fixture(scope="module")
def echo_link(echo: EchoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkProcess]:
    link = _link(echo.port, tmp_path_factory.mktemp("link") / "stats.json")
    yield link
    link.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_link_passes_bytes_intact_and_in_order_both_ways(
    echo: EchoServer, echo_link: LinkProcess
) -> None:
    # 400 writes of 1 B to 20 kB, as fast as they go: many arrive within one timer tick
    rng = random.Random(16)
    chunks = [rng.randbytes(rng.choice((1, 7, 300, 1500, 20_000))) for _ in range(400)]
    sent = b"".join(chunks)
    with _connect(echo_link.port) as sock:

        def send() -> None:
            for chunk in chunks:
                sock.sendall(chunk)

        writer = threading.Thread(target=send)
        writer.start()
        back = bytearray()
        sock.settimeout(10)
        while len(back) < len(sent):
            data = sock.recv(1 << 20)
            assert data, "the link closed the connection"
            back += data
        writer.join()
    assert bytes(echo.received[-1]) == sent  # client → server
    assert bytes(back) == sent  # server → client


def test_round_trip_through_the_link_takes_at_least_its_rtt(echo_link: LinkProcess) -> None:
    with _connect(echo_link.port) as sock:
        for n in range(5):
            began = time.perf_counter()
            sock.sendall(bytes([n]))
            assert sock.recv(16) == bytes([n])
            assert time.perf_counter() - began >= RTT_S


def test_postgresql_through_the_link(cluster: Cluster, tmp_path: Path) -> None:
    """Startup, queries and a 1 MB statement and result: each round trip ≥ rtt, bytes intact."""
    link = _link(cluster.port, tmp_path / "stats.json")
    try:
        began = time.perf_counter()
        with psycopg.connect(cluster.dsn().replace(f":{cluster.port}/", f":{link.port}/")) as conn:
            assert time.perf_counter() - began >= 2 * RTT_S  # connect: startup, then a query
            for _ in range(3):
                began = time.perf_counter()
                assert conn.execute("SELECT 1").fetchone() == (1,)
                assert time.perf_counter() - began >= RTT_S
            text = random.Random(7).randbytes(500_000).hex()
            row = conn.execute("SELECT md5(%s), %s::text", (text, text)).fetchone()
            assert row == (hashlib.md5(text.encode()).hexdigest(), text)
    finally:
        stats = link.stop()
    assert stats["up"]["chunks"] > 0 and stats["down"]["bytes"] > 1_000_000
