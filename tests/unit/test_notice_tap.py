"""The notice tap of ServerTracker: pgdurable's own notices are taken out of the server
stream, byte-exactly, however the stream is cut; nothing else changes."""

from __future__ import annotations

import pytest

from pgdurable_proxy.wire.messages import build_error_body, error_response, frame
from tests.support.framing import Framing

MARKERS = frozenset({"pgdurable:new-transaction-start", "pgdurable:signal"})


def _notice(message: str, detail: str) -> bytes:
    return frame(b"N", build_error_body({"S": "NOTICE", "C": "00000", "M": message, "D": detail}))


ORDINARY = _notice("hello", "x")
LOOKALIKE = _notice("pgdurable:new-transaction-start but longer", "y")
STREAM = b"".join(
    [
        frame(b"T", b"\0\0"),
        _notice("pgdurable:new-transaction-start", '{"request": 1}'),
        ORDINARY,
        frame(b"D", b"\0\1\0\0\0\3abc"),
        LOOKALIKE,
        _notice("pgdurable:signal", "c2lnbmFs"),
        _notice("pgdurable:signal", "YWdhaW4="),
        error_response("42P01", "relation does not exist"),
        frame(b"Z", b"I"),
    ]
)
EXPECTED = b"".join(
    [
        frame(b"T", b"\0\0"),
        ORDINARY,
        frame(b"D", b"\0\1\0\0\0\3abc"),
        LOOKALIKE,
        error_response("42P01", "relation does not exist"),
        frame(b"Z", b"I"),
    ]
)


@pytest.mark.parametrize("step", [1, 2, 3, 5, 6, 7, 11, 29, len(STREAM)])
def test_only_marked_notices_are_taken_whatever_the_chunking(step: int, framing: Framing) -> None:
    taken: list[tuple[str, str]] = []
    tracker = framing.ServerTracker()
    tracker.tap_notices(MARKERS, lambda message, detail: taken.append((message, detail)))
    out = b"".join(tracker.feed(STREAM[i : i + step]) for i in range(0, len(STREAM), step))
    assert out == EXPECTED
    assert taken == [
        ("pgdurable:new-transaction-start", '{"request": 1}'),
        ("pgdurable:signal", "c2lnbmFs"),
        ("pgdurable:signal", "YWdhaW4="),
    ]
    assert tracker.at_boundary and tracker.status == ord("I") and tracker.ready_count == 1


@pytest.mark.parametrize("step", [1, 4, 7, len(STREAM)])
def test_without_a_tap_every_byte_passes_as_it_arrives(step: int, framing: Framing) -> None:
    tracker = framing.ServerTracker()
    for i in range(0, len(STREAM), step):
        chunk = STREAM[i : i + step]
        assert tracker.feed(chunk) is chunk
    assert tracker.at_boundary and tracker.ready_count == 1


def test_a_notice_cut_across_chunks_is_held_back_until_whole(framing: Framing) -> None:
    notice = _notice("pgdurable:signal", "x")
    tracker = framing.ServerTracker()
    tracker.tap_notices(MARKERS, lambda message, detail: None)
    row = frame(b"D", b"\0\1\0\0\0\3abc")
    assert tracker.feed(row + ORDINARY[:3]) == row
    assert tracker.feed(ORDINARY[3:] + notice[:9]) == ORDINARY
    assert tracker.feed(notice[9:] + row) == row
