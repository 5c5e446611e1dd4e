"""The compiled framing does what the pure-Python one does, byte for byte and state for
state, on random streams cut at random places (seeded: a failure reproduces)."""

from __future__ import annotations

import itertools
import random
import struct
import sys
from collections.abc import Callable
from types import ModuleType

import pytest

import pgdurable_proxy.wire
from pgdurable_proxy.wire import frames
from pgdurable_proxy.wire.errors import ProtocolViolation
from pgdurable_proxy.wire.messages import build_error_body, error_response, frame
from tests.support.framing import PURE, Framing, compiled

MARKERS = frozenset({"pgdurable:signal"})


def _query(sql: str) -> bytes:
    return frame(b"Q", sql.encode() + b"\0")


CLIENT_MESSAGES = [
    _query("SELECT abalance FROM pgbench_accounts WHERE aid = 1"),
    _query("SELECT df.status('abc')"),
    _query("select PG_DURABLE_thing"),
    _query("SELECT '" + "x" * 20_000 + "'"),
    frame(b"P", b"\0SELECT $1\0\0\0"),
    frame(b"P", b"s1\0SELECT Df.start('w')\0\0\0"),
    frame(b"B", b"\0\0\0\0\0\1\0\0\0\x06123456\0\0"),
    frame(b"D", b"P\0"),
    frame(b"E", b"\0\0\0\0\0"),
    frame(b"S", b""),
    frame(b"H", b""),
    frame(b"F", b"\0\0\0\1\0\0\0\0\0\0"),
    frame(b"d", b"SELECT df.start('x')\n" * 30),
    frame(b"c", b""),
]
BAD_HEADERS = [b"Z\0\0\0\4", b"Q\0\0\0\2", b"S" + struct.pack("!I", 20_000)]


def _cuts(rng: random.Random, size: int) -> list[int]:
    return sorted(rng.sample(range(1, size), min(size - 1, rng.randint(0, 12))))


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _client_run(framing: Framing, chunks: list[bytes], login_at: int) -> list[object]:
    seen: list[bytes] = []

    def inspect(msg_type: int, message: bytes) -> bytes | None:
        seen.append(message)
        return _query("SELECT 'replaced'") if b"status" in message else None

    framer = framing.ClientFramer(inspect, inspecting=login_at == 0)
    trace: list[object] = []
    for i, chunk in enumerate(chunks):
        if i == login_at:
            framer.start_inspecting()
        try:
            out: object = framer.feed(chunk)
        except ProtocolViolation as exc:
            trace.append(("violation", str(exc)))
            break
        trace.append((out, framer.requests, framer.terminated, framer.at_boundary))
    trace.append(seen)
    return trace


def _server_stream(rng: random.Random) -> bytes:
    pool: list[Callable[[], bytes]] = [
        lambda: frame(b"T", b"\0\1abalance\0" + b"\0" * 18),
        lambda: frame(b"D", b"\0\1" + struct.pack("!I", n := rng.choice([1, 7, 5000])) + b"r" * n),
        lambda: frame(b"C", b"SELECT 1\0"),
        lambda: frame(b"Z", rng.choice([b"I", b"T", b"E"])),
        lambda: frame(b"S", b"application_name\0app" + str(rng.random()).encode() + b"\0"),
        lambda: frame(b"K", b"\0\0\x30\x39" + b"k" * 4),
        lambda: error_response("42P01", "relation does not exist"),
        lambda: frame(b"N", build_error_body({"S": "NOTICE", "M": "hello"})),
        lambda: frame(b"N", build_error_body({"S": "NOTICE", "M": "pgdurable:signal", "D": "x"})),
        lambda: frame(b"1", b"") + frame(b"2", b""),
    ]
    body = b"".join(rng.choice(pool)() for _ in range(rng.randint(1, 30)))
    if rng.random() < 0.2:
        body += error_response("57P01", "bye", severity="FATAL")
    return body


def _server_run(framing: Framing, chunks: list[bytes], tapped: bool) -> list[object]:
    taken: list[tuple[str, str]] = []
    tracker = framing.ServerTracker()
    if tapped:
        tracker.tap_notices(MARKERS, lambda message, detail: taken.append((message, detail)))
    trace: list[object] = []
    for chunk in chunks:
        out = tracker.feed(chunk)
        trace.append((out, tracker.status, tracker.ready_count, tracker.at_boundary))
        trace.append(tracker.unfinished())
    state = (tracker.parameters, tracker.backend_key, tracker.fatal_seen)
    return [*trace, state, taken]


@pytest.fixture
def compiled_framing(compiled_framing_module: ModuleType) -> Framing:
    return compiled(compiled_framing_module)


def test_client_streams(compiled_framing: Framing) -> None:
    rng = random.Random(16)
    for _ in range(300):
        stream = b"".join(rng.choice(CLIENT_MESSAGES) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.1:
            stream += rng.choice([frame(b"X", b""), rng.choice(BAD_HEADERS)])
        chunks = _pieces(stream, _cuts(rng, len(stream)))
        login_at = rng.randint(0, len(chunks))
        expected = _client_run(PURE, chunks, login_at)
        assert _client_run(compiled_framing, chunks, login_at) == expected, stream


def test_server_streams(compiled_framing: Framing) -> None:
    rng = random.Random(16)
    for _ in range(300):
        stream = _server_stream(rng)
        chunks = _pieces(stream, _cuts(rng, len(stream)))
        tapped = rng.random() < 0.5
        expected = _server_run(PURE, chunks, tapped)
        assert _server_run(compiled_framing, chunks, tapped) == expected, stream


def test_one_chunk_passes_as_the_same_object(compiled_framing: Framing) -> None:
    """The compiled fast path forwards the chunk it got, as the pure one does."""
    chunk = CLIENT_MESSAGES[4] + CLIENT_MESSAGES[6] + CLIENT_MESSAGES[9]
    assert compiled_framing.ClientFramer(lambda t, m: None).feed(chunk) is chunk
    reply = frame(b"2", b"") + frame(b"C", b"SELECT 1\0") + frame(b"Z", b"I")
    assert compiled_framing.ServerTracker().feed(reply) is reply


def test_the_extension_is_chosen_unless_pure_python_is_asked_for(
    compiled_framing_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "pgdurable_proxy.wire._framing"
    monkeypatch.setitem(sys.modules, name, compiled_framing_module)
    monkeypatch.setattr(pgdurable_proxy.wire, "_framing", compiled_framing_module, raising=False)
    monkeypatch.delenv("PGDURABLE_PURE_PYTHON", raising=False)
    assert frames._compiled_core() is compiled_framing_module
    monkeypatch.setenv("PGDURABLE_PURE_PYTHON", "1")
    assert frames._compiled_core() is None
