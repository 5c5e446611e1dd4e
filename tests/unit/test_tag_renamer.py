"""TagRenamer: CREATE EXTENSION pg_durable's DO block answers with the CREATE EXTENSION tag."""

from __future__ import annotations

from dsl import EXTENSION_MARKER, EXTENSION_TAG
from pgdurable_proxy.wire.frames import ServerTrackerBase
from pgdurable_proxy.wire.messages import build_error_body, frame
from pgdurable_proxy.wire.rewrite import TagRenamer
from tests.support.framing import Framing


def _notice(message: str) -> bytes:
    return frame(b"N", build_error_body({"S": "NOTICE", "C": "00000", "M": message}))


def _complete(tag: str) -> bytes:
    return frame(b"C", tag.encode() + b"\0")


ROWS = frame(b"T", b"\0\0") + frame(b"D", b"\0\0") + _complete("SELECT 1")
READY = frame(b"Z", b"I")


def _fed(renamer: TagRenamer, stream: bytes, chunk: int) -> bytes:
    return b"".join(renamer.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk))


def test_the_marked_do_is_renamed_and_its_notice_taken_out_whatever_the_chunking() -> None:
    stream = (
        ROWS
        + _notice(EXTENSION_MARKER)
        + _complete("DO")
        + _notice("a notice of the user's own")
        + _complete("DO")  # a DO of the user's own keeps its tag
        + _notice(EXTENSION_MARKER + " and more")
        + _complete("DO")
        + READY
    )
    expected = (
        ROWS
        + _complete(EXTENSION_TAG)
        + _notice("a notice of the user's own")
        + _complete("DO")
        + _notice(EXTENSION_MARKER + " and more")
        + _complete("DO")
        + READY
    )
    for chunk in (1, 2, 5, 9, len(stream)):
        assert _fed(TagRenamer(EXTENSION_MARKER, EXTENSION_TAG), stream, chunk) == expected


def test_only_the_message_right_after_the_marker_is_renamed() -> None:
    stream = _notice(EXTENSION_MARKER) + frame(b"E", b"SERROR\0\0") + _complete("DO") + READY
    expected = frame(b"E", b"SERROR\0\0") + _complete("DO") + READY
    assert TagRenamer(EXTENSION_MARKER, EXTENSION_TAG).feed(stream) == expected


def _relayed(stream: bytes, cut: int, tracker: ServerTrackerBase) -> bytes:
    """What the client gets when the renamer is installed after `cut` bytes, behind the
    tracker (as UpstreamLink chains them), the rest arriving in chunks of 3 bytes."""
    out = tracker.feed(stream[:cut])
    renamer = TagRenamer(EXTENSION_MARKER, EXTENSION_TAG, *tracker.unfinished())
    for i in range(cut, len(stream), 3):
        out += renamer.feed(tracker.feed(stream[i : i + 3]))
    return out


def test_installed_inside_a_message_it_passes_the_rest_of_that_message(framing: Framing) -> None:
    """Installed mid-pipeline, with the server inside an earlier result: the tracker says
    where, whether it is inside a message's body or its header."""
    big_row = frame(b"D", b"\0\1" + b"\0\0\0\x10" + b"x" * 16)
    stream = big_row + _notice(EXTENSION_MARKER) + _complete("DO") + READY
    for cut in range(1, len(big_row)):
        assert _relayed(stream, cut, framing.ServerTracker()) == (
            big_row + _complete(EXTENSION_TAG) + READY
        ), cut


def test_installed_while_the_tracker_holds_a_notice_back(framing: Framing) -> None:
    """On a catalog session the tracker holds a notice cut by a chunk back until it is whole
    (it may be one of pgdurable's own): the renamer then starts between messages."""
    theirs = _notice("a notice of the user's own")
    stream = theirs + _notice(EXTENSION_MARKER) + _complete("DO") + READY
    for cut in range(1, len(theirs)):
        tracker = framing.ServerTracker()
        tracker.tap_notices(frozenset({"pgdurable:other"}), lambda message, detail: None)
        assert _relayed(stream, cut, tracker) == theirs + _complete(EXTENSION_TAG) + READY, cut
