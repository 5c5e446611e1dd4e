"""Rewrite server→client messages until the next ReadyForQuery (sans-I/O).

Used while authentication needs a channel-binding offer removed, and after the relay
rewrote a statement whose errors need a position; it then steps aside, so ordinary traffic
never pays for it.
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
