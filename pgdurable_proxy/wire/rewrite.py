"""Rewrite server→client messages (sans-I/O).

Until the next ReadyForQuery: while authentication needs a channel-binding offer removed,
and after the relay rewrote a statement whose errors need a position; it then steps aside,
so ordinary traffic never pays for it. For the rest of a session that sent CREATE
EXTENSION pg_durable: that statement's tag (TagRenamer).
"""

from __future__ import annotations

from collections.abc import Callable

from pgdurable_proxy.wire.messages import build_error_body, frame, parse_error_fields

MARKER = "pgdurable:position="


class UntilReady:
    """Frames whole messages, passing each through `transform`, until ReadyForQuery."""

    __slots__ = ("_buffer", "_transform", "done")

    def __init__(self, transform: Callable[[bytes], bytes]) -> None:
        self._buffer = bytearray()
        self._transform = transform
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Return the bytes the client should see now; holds back an incomplete message."""
        buf = self._buffer
        buf += data
        out = bytearray()
        while len(buf) >= 5:
            end = 1 + int.from_bytes(buf[1:5], "big")
            if len(buf) < end:
                break
            message = bytes(buf[:end])
            del buf[:end]
            out += self._transform(message)
            if message[:1] == b"Z":
                self.done = True
                out += buf
                buf.clear()
                break
        return bytes(out)


def error_positioner(hints: tuple[tuple[str, int], ...] = ()) -> UntilReady:
    """Moves df._step_syntax_error's position (and hinted ones) into ErrorResponse 'P'.

    `hints` maps the start of an error message to the position of the literal it is about
    (the server validates, e.g. a cron expression; pgdurable knows where the literal was).
    """
    return UntilReady(lambda m: _positioned(m, hints) if m[:1] == b"E" else m)


def _positioned(message: bytes, hints: tuple[tuple[str, int], ...]) -> bytes:
    fields = parse_error_fields(message[5:])
    column = fields.get("c", "")
    if column.startswith(MARKER):
        position = column[len(MARKER) :]
    else:
        text = fields.get("M", "")
        found = [pos for prefix, pos in hints if text.startswith(prefix)]
        if not found or "P" in fields:
            return message
        position = str(found[0])
    kept = {code: value for code, value in fields.items() if code not in ("c", "W", "P")}
    rebuilt: dict[str, str] = {}
    for code, value in kept.items():
        rebuilt[code] = value
        if code == "M":
            rebuilt["P"] = position
    return frame(b"E", build_error_body(rebuilt))


class TagRenamer:
    """Frames every server message, takes out the NoticeResponses whose message text is
    `marker` and gives the CommandComplete right after each the tag `tag`. Installed on a
    session once it sent CREATE EXTENSION pg_durable, which the server runs as a DO block
    that raises that notice last (dsl/classify.py): its `DO` becomes `CREATE EXTENSION`.

    It may be installed while the server is inside a message (a pipeline's earlier
    results): `skip` bytes of that message are still to come, or its start `sent` was
    forwarded already (ServerTracker.unfinished()). That message passes unchanged."""

    __slots__ = ("_buffer", "_marked", "_marker", "_sent", "_skip", "_tag")

    def __init__(self, marker: str, tag: str, skip: int = 0, sent: bytes = b"") -> None:
        self._marker = marker.encode()
        self._tag = frame(b"C", tag.encode() + b"\0")
        self._skip = skip
        self._buffer = bytearray(sent)
        self._sent = len(sent)  # bytes at the start of the buffer forwarded already
        self._marked = False  # the last message was the marker notice

    def feed(self, data: bytes) -> bytes:
        """The bytes to forward now; an incomplete trailing message is held back."""
        out = bytearray()
        if self._skip:
            passed = min(self._skip, len(data))
            out += data[:passed]
            self._skip -= passed
            data = data[passed:]
        buf = self._buffer
        buf += data
        pos = 0
        n = len(buf)
        while pos + 5 <= n:
            end = pos + 1 + int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if end > n:
                break
            if self._sent:  # the message begun before: its rest passes
                out += buf[pos + self._sent : end]
                self._sent = 0
            else:
                out += self._renamed(buf, pos, end)
            pos = end
        del buf[:pos]
        return bytes(out)

    def _renamed(self, buf: bytearray, pos: int, end: int) -> bytes:
        msg_type = buf[pos]
        if self._marked:
            self._marked = False
            if msg_type == 0x43:  # 'C'
                return self._tag
        if msg_type == 0x4E and self._marker in buf[pos + 5 : end]:  # 'N'
            fields = parse_error_fields(bytes(buf[pos + 5 : end]))
            if fields.get("M") == self._marker.decode():
                self._marked = True
                return b""
        return bytes(buf[pos:end])
