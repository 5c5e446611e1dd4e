"""The sans-I/O framers on captured bytes, cut at every possible place."""

from __future__ import annotations

import struct

import pytest

from pgdurable_proxy.wire.errors import ProtocolViolation
from pgdurable_proxy.wire.frames import ClientFramerBase
from pgdurable_proxy.wire.messages import error_response, frame, strip_channel_binding
from tests.support.framing import Framing


def _query(sql: str) -> bytes:
    return frame(b"Q", sql.encode() + b"\0")


def _parse(name: str, sql: str) -> bytes:
    return frame(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + b"\0\0")


# A client stream: extended protocol, a COPY whose data mentions df., simple queries.
CLIENT_STREAM = b"".join(
    [
        _parse("s1", "SELECT $1"),
        frame(b"B", b"\0s1\0\0\0\0\0\0\0"),
        frame(b"E", b"\0\0\0\0\0"),
        frame(b"S", b""),
        _query("COPY t FROM STDIN"),
        frame(b"d", b"SELECT df.start('x')\n" * 50),
        frame(b"c", b""),
        _query("SELECT df.status('abc')"),
        _query("SELECT 1"),
    ]
)


def _feed_in_pieces(framer: ClientFramerBase, data: bytes, cuts: list[int]) -> bytes:
    out = b""
    last = 0
    for cut in [*cuts, len(data)]:
        out += framer.feed(data[last:cut])
        last = cut
    return out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_client_framer_forwards_every_byte_in_order(step: int, framing: Framing) -> None:
    seen: list[bytes] = []

    def inspect(msg_type: int, message: bytes) -> bytes | None:
        seen.append(message)
        return None

    framer = framing.ClientFramer(inspect)
    out = _feed_in_pieces(framer, CLIENT_STREAM, list(range(step, len(CLIENT_STREAM), step)))
    assert out == CLIENT_STREAM
    assert seen == [_query("SELECT df.status('abc')")]  # CopyData is never inspected
    assert framer.at_boundary
    assert framer.requests == 1 + 4  # startup + Sync + three Queries


def test_client_framer_replaces_an_inspected_message(framing: Framing) -> None:
    replacement = _query("SELECT 'rewritten'")
    framer = framing.ClientFramer(lambda t, m: replacement if b"status" in m else None)
    out = _feed_in_pieces(framer, CLIENT_STREAM, [5, 100, 151])
    assert out == CLIENT_STREAM.replace(_query("SELECT df.status('abc')"), replacement)


@pytest.mark.parametrize(
    "bad",
    [b"Z\0\0\0\4", b"Q\0\0\0\2", b"S" + struct.pack("!I", 20_000), b"d" + struct.pack("!I", 2**31)],
)
def test_client_framer_rejects_bad_headers(bad: bytes, framing: Framing) -> None:
    with pytest.raises(ProtocolViolation):
        framing.ClientFramer(lambda t, m: None).feed(_query("SELECT 1") + bad)


def test_terminate_is_noted(framing: Framing) -> None:
    framer = framing.ClientFramer(lambda t, m: None)
    framer.feed(frame(b"X", b""))
    assert framer.terminated


SERVER_STREAM = b"".join(
    [
        frame(b"R", b"\0\0\0\0"),
        frame(b"S", b"client_encoding\0UTF8\0"),
        frame(b"K", b"\0\0\x30\x39" + b"k" * 32),
        frame(b"Z", b"I"),
        frame(b"T", b"\0\1a\0" + b"\0" * 18),
        *[frame(b"D", b"\0\1\0\0\0\3abc")] * 40,
        frame(b"C", b"SELECT 40\0"),
        error_response("42P01", "relation does not exist"),
        frame(b"Z", b"T"),
    ]
)


@pytest.mark.parametrize("step", [1, 4, 5, 6, 13, 1000])
def test_server_tracker_follows_boundaries(step: int, framing: Framing) -> None:
    tracker = framing.ServerTracker()
    for start in range(0, len(SERVER_STREAM), step):
        tracker.feed(SERVER_STREAM[start : start + step])
    assert tracker.at_boundary
    assert tracker.status == ord("T") and tracker.ready_count == 2
    assert tracker.parameters == {"client_encoding": "UTF8"}
    assert tracker.backend_key == b"\0\0\x30\x39" + b"k" * 32
    assert not tracker.fatal_seen


def test_server_tracker_mid_message_is_not_a_boundary(framing: Framing) -> None:
    tracker = framing.ServerTracker()
    tracker.feed(SERVER_STREAM[:-3])
    assert not tracker.at_boundary
    tracker.feed(error_response("57P01", "bye", severity="FATAL")[:4])
    fatal = framing.ServerTracker()
    fatal.feed(error_response("57P01", "bye", severity="FATAL"))
    assert fatal.fatal_seen


def test_channel_binding_offer_is_stripped() -> None:
    offer = frame(b"R", b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
    assert strip_channel_binding(offer) == frame(b"R", b"\0\0\0\x0aSCRAM-SHA-256\0\0")
    plain = frame(b"R", b"\0\0\0\x0aSCRAM-SHA-256\0\0")
    assert strip_channel_binding(plain) is plain


def test_positioner_adds_positions_and_stops_at_ready() -> None:
    from pgdurable_proxy.wire.messages import parse_error_fields
    from pgdurable_proxy.wire.rewrite import error_positioner

    marked = frame(b"E", b"SERROR\0C42601\0Mbad step\0cpgdurable:position=17\0Wcontext\0\0")
    hinted = error_response("22023", "Invalid cron expression 'x': nope")
    stream = marked + hinted + frame(b"Z", b"E") + frame(b"T", b"later")
    positioner = error_positioner((("Invalid cron expression 'x'", 33),))
    out = b""
    for i in range(0, len(stream), 3):  # as the relay does: once done, bytes bypass it
        chunk = stream[i : i + 3]
        out += chunk if positioner.done else positioner.feed(chunk)
    assert positioner.done
    first_len = 1 + int.from_bytes(out[1:5], "big")
    first = parse_error_fields(out[5:first_len])
    assert first["P"] == "17" and "c" not in first and "W" not in first
    second = parse_error_fields(out[first_len + 5 : out.index(b"Z\0\0\0\5")])
    assert second["P"] == "33"
    assert out.endswith(frame(b"Z", b"E") + frame(b"T", b"later"))


def test_nothing_is_inspected_or_held_before_login(framing: Framing) -> None:
    seen: list[bytes] = []

    def inspect(msg_type: int, message: bytes) -> bytes | None:
        seen.append(message)
        return b""

    framer = framing.ClientFramer(inspect, inspecting=False)
    big = _query("SELECT df.start($$" + "x" * 100_000 + "$$)")
    small = _query("SELECT df.status('abc')")
    assert framer.feed(big[:1000]) == big[:1000]  # streamed, not held until complete
    assert framer.feed(big[1000:] + small) == big[1000:] + small
    assert framer.feed(small) == small  # the one-message fast path too
    assert seen == []
    framer.start_inspecting()
    assert framer.feed(big[:1000]) == b""  # held whole from now on, and offered
    assert framer.feed(big[1000:]) == b""
    assert seen == [big]
