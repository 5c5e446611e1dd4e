"""The relay's own behaviour: flow control, disconnects, interception boundaries."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.metrics import read_metrics, rss_bytes
from tests.support.proxy import ProxyProcess
from tests.support.rawwire import RawConnection, query

MiB = 1024 * 1024


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_1gb_result_streams_in_bounded_memory(proxy: ProxyProcess) -> None:
    assert proxy.process is not None
    pid = proxy.process.pid
    conn = RawConnection(proxy.port, timeout=120)
    conn.login()
    rows, width = 1_000_000, 1000  # 1 GB of DataRows
    conn.send(query(f"SELECT repeat('x', {width}) FROM generate_series(1, {rows})"))
    before = rss_bytes(pid)
    time.sleep(2)  # a client that does not read: the proxy must stop reading too
    stalled = rss_bytes(pid)
    received = len(conn.buffer)
    peak = stalled
    while True:
        chunk = conn.sock.recv(1 << 20)
        assert chunk, "connection closed early"
        received += len(chunk)
        if received % (64 * MiB) < len(chunk):
            peak = max(peak, rss_bytes(pid))
        if chunk.endswith(b"Z\x00\x00\x00\x05I"):
            break
    assert received > rows * width
    assert stalled - before < 32 * MiB, (before, stalled)
    assert peak - before < 64 * MiB, (before, peak)
    conn.close()


def test_copy_in_is_backpressured(proxy: ProxyProcess, cluster: Cluster) -> None:
    assert proxy.process is not None
    pid = proxy.process.pid
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS bp_t (line text)")
        admin.execute("TRUNCATE bp_t")
        with admin.transaction():
            admin.execute("LOCK TABLE bp_t IN ACCESS EXCLUSIVE MODE")
            conn = RawConnection(proxy.port, timeout=120)
            conn.login()
            conn.send(query("COPY bp_t FROM STDIN"))
            payload = (b"y" * 1023 + b"\n") * 1024  # 1 MiB of lines
            frame = b"d" + (len(payload) + 4).to_bytes(4, "big") + payload
            sent = [0]

            def push() -> None:
                for _ in range(256):
                    conn.sock.sendall(frame)
                    sent[0] += 1
                conn.sock.sendall(b"c\x00\x00\x00\x04")

            before = rss_bytes(pid)
            writer = threading.Thread(target=push, daemon=True)
            writer.start()
            time.sleep(3)
            blocked_rss = rss_bytes(pid)
            assert sent[0] < 200, "the client should be blocked by backpressure"
            assert blocked_rss - before < 48 * MiB
        writer.join(60)
        assert not writer.is_alive()
        messages = conn.read_until("Z")
        assert any(m.type == "C" and m.body.startswith(b"COPY 262144") for m in messages), messages
        conn.close()
        admin.execute("DROP TABLE bp_t")


def test_client_disconnect_mid_query_ends_backend(proxy: ProxyProcess, cluster: Cluster) -> None:
    conn = RawConnection(proxy.port)
    conn.login(application_name="disconnect-me")
    conn.send(query("SELECT pg_sleep(60)"))
    with psycopg.connect(cluster.dsn(), autocommit=True) as monitor:

        def count() -> int:
            row = monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'disconnect-me'"
            ).fetchone()
            return int(row[0]) if row else 0

        _wait_for(lambda: count() == 1)
        conn.close()
        _wait_for(lambda: count() == 0, timeout=5)


def test_ordinary_traffic_never_reaches_the_parser(proxy: ProxyProcess) -> None:
    before = read_metrics(proxy.http_port)
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        for i in range(200):
            conn.execute("SELECT %s::int + 1, 'plain'", (i,))
            conn.execute(f"SELECT {i} AS simple_protocol_{i % 7}", prepare=False)
        conn.execute("CREATE TEMP TABLE pdf_files (id int)")  # "df" inside a word: a candidate
        middle = read_metrics(proxy.http_port)
        for _ in range(5):
            conn.execute("SELECT count(*) FROM pdf_files")
        conn.execute("SELECT df_fake FROM (SELECT 1 AS df_fake) s")
    after = read_metrics(proxy.http_port)
    assert middle["classified_total"] - before["classified_total"] == 1
    assert middle["candidates_total"] - before["candidates_total"] == 1
    assert after["classified_total"] - middle["classified_total"] == 2  # two new texts
    assert after["classify_cache_hits_total"] - middle["classify_cache_hits_total"] == 4
    assert after["workflow_statements_total"] == before["workflow_statements_total"]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT df.start('SELECT 1')",
        "select DF.Start('x' ~> 'y')",
        "PREPARE p AS SELECT df.status($1)",
    ],
)
def test_df_calls_are_classified_as_workflow(proxy: ProxyProcess, statement: str) -> None:
    before = read_metrics(proxy.http_port)
    conn = RawConnection(proxy.port)
    conn.login()
    conn.send(query(statement))
    conn.read_until("Z")  # the server answers (the df schema does not exist yet: an error)
    conn.close()
    after = read_metrics(proxy.http_port)
    assert after["workflow_statements_total"] - before["workflow_statements_total"] == 1


def test_create_extension_sent_while_a_result_streams_gets_its_tag(proxy: ProxyProcess) -> None:
    """The relay learns of CREATE EXTENSION pg_durable while it is inside an earlier
    result's DataRow: the rest of that row passes untouched, the extension gets its tag."""
    conn = RawConnection(proxy.port, timeout=30)
    conn.login()
    size = 16 * MiB  # more than the socket buffers hold: the relay stops mid-row
    conn.send(query(f"SELECT repeat('x', {size})"))
    received = bytearray()
    while len(received) < 64 * 1024:  # the row has begun
        received += conn.sock.recv(65536)
    conn.send(query("CREATE EXTENSION pg_durable"))
    ready = b"Z\x00\x00\x00\x05I"
    while not (received.endswith(ready) and received.count(ready, len(received) - 64) == 2):
        received += conn.sock.recv(1 << 20)
    conn.close()
    messages, pos = [], 0
    while pos < len(received):
        end = pos + 1 + int.from_bytes(received[pos + 1 : pos + 5], "big")
        messages.append((chr(received[pos]), bytes(received[pos + 5 : end])))
        pos = end
    assert [kind for kind, _ in messages] == ["T", "D", "C", "Z", "C", "Z"]
    assert messages[1][1] == b"\x00\x01" + size.to_bytes(4, "big") + b"x" * size
    assert (messages[2][1], messages[4][1]) == (b"SELECT 1\0", b"CREATE EXTENSION\0")
