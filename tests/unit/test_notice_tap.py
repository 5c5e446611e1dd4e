"""NoticeTap: pgdurable's own notices are taken out of the server stream, byte-exactly."""

from __future__ import annotations

from pgdurable_proxy.wire.messages import build_error_body, frame
from pgdurable_proxy.wire.rewrite import NoticeTap

MARKER = "pgdurable:new-transaction-start"


def _notice(message: str, detail: str) -> bytes:
    return frame(b"N", build_error_body({"S": "NOTICE", "C": "00000", "M": message, "D": detail}))


def test_only_marked_notices_are_taken_whatever_the_chunking() -> None:
    ordinary = _notice("hello", "x")
    lookalike = _notice(MARKER + " but longer", "y")
    stream = (
        frame(b"T", b"\0\0")
        + _notice(MARKER, '{"request": 1}')
        + ordinary
        + lookalike
        + frame(b"Z", b"I")
    )
    expected = frame(b"T", b"\0\0") + ordinary + lookalike + frame(b"Z", b"I")
    for chunk in (1, 3, 7, len(stream)):
        taken: list[str] = []
        tap = NoticeTap(MARKER, taken.append)
        out = b"".join(tap.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk))
        assert out == expected
        assert taken == ['{"request": 1}']
