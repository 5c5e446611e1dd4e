"""Server→client boundary tracking (the relay's hot path, with client_frames.py).

Bodies are skipped; only ReadyForQuery, BackendKeyData, ParameterStatus and ErrorResponse
are read, so the relay knows where message boundaries are (to write its own messages
safely) and the session's transaction status; and, on sessions of the catalog's database,
NoticeResponses, so that pgdurable's own notices are taken out (notice tap). frames.py
says which implementation the relay uses.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgdurable_proxy.wire.messages import parse_error_fields

_unpack_int32 = struct.Struct("!I").unpack_from
_S = ord("S")
_Z = ord("Z")
_K = ord("K")
_E = ord("E")
_N = ord("N")
_TRACKED = frozenset((_Z, _K, _S, _E))
# With a notice tap, NoticeResponses are read too (they are rare; everything else costs the
# same membership test as before).
_TRACKED_TAPPED = _TRACKED | {_N}
# A NoticeResponse pgdurable may take has a message field starting so (a byte test before
# any decoding).
_MARKED = b"Mpgdurable:"
IDLE = ord("I")

NoticeHandler = Callable[[str, str], None]
"""Called with (message, detail) of a NoticeResponse the tap took out of the stream."""


class ServerTrackerBase:
    """Follows server→client message boundaries without copying bodies. The logic; the
    state lives in ServerTrackerPy's slots or in the compiled core.

    With a notice tap (`tap_notices`), NoticeResponses whose message is one of the given
    markers are taken out of the stream and handed over: that is how a backend asks pgdurable
    for something from inside a statement (df.signal, df.start(transaction_mode => 'new')),
    whatever called it (psql, a DO block, a PL/pgSQL function). A notice cut across chunks
    is held back until whole; every other message is forwarded as it arrives.
    """

    if not TYPE_CHECKING:  # no state here, but mypy would read () as the whole layout
        __slots__ = ()
    _markers: frozenset[str]
    _on_notice: NoticeHandler | None
    _partial: bytearray
    _remaining: int
    _tapped: bool
    _tracked: frozenset[int]
    backend_key: bytes
    fatal_seen: bool
    parameters: dict[str, str]
    ready_count: int
    status: int

    def __init__(self) -> None:
        self._remaining = 0  # bytes of the current message not seen yet
        self._partial = bytearray()  # header, or whole tracked message, being assembled
        self._tracked = _TRACKED
        self._tapped = False  # NoticeResponses are tracked too
        self._markers = frozenset()
        self._on_notice = None
        self.status = 0  # last ReadyForQuery status byte (0 before the first one)
        self.ready_count = 0
        self.backend_key = b""  # BackendKeyData body: pid + secret (3.0 or 3.2 length)
        self.parameters = {}
        self.fatal_seen = False

    def tap_notices(self, markers: frozenset[str], on_notice: NoticeHandler) -> None:
        """From the next chunk on, take out notices whose message is in `markers`."""
        self._markers = markers
        self._on_notice = on_notice
        self._tracked = _TRACKED_TAPPED
        self._tapped = True

    @property
    def at_boundary(self) -> bool:
        """True when the bytes seen so far end exactly on a message boundary."""
        return self._remaining == 0 and not self._partial

    def unfinished(self) -> tuple[int, bytes]:
        """Where the forwarded stream is inside a message: bytes of it still to come, or (a
        header or tracked message cut by a chunk) its start, forwarded already. A tapped
        notice held back until whole is not forwarded yet: the stream is between messages."""
        partial = self._partial
        if partial and partial[0] == _N and self._tapped:
            return 0, b""
        return self._remaining, bytes(partial)

    def _feed_python(self, data: bytes) -> bytes:
        """Observe a chunk from the server; return what to forward (`data` itself unless a
        tapped notice is taken out or held back)."""
        if self._partial:
            return self._feed_after_partial(data)
        pos = self._remaining
        n = len(data)
        if pos >= n:
            self._remaining = pos - n
            return data
        tracked = self._tracked
        unpack = _unpack_int32
        pieces: list[bytes] | None = None
        origin = 0
        last = n - 5
        while pos <= last:
            msg_type = data[pos]
            (length,) = unpack(data, pos + 1)
            if msg_type in tracked:
                end = pos + 1 + length
                if end > n:
                    break
                if msg_type == _Z:
                    self.status = data[pos + 5]
                    self.ready_count += 1
                elif msg_type != _N:
                    self._on_message(msg_type, data[pos + 5 : end])
                elif self._took(data[pos + 5 : end]):
                    if pieces is None:
                        pieces = []
                    pieces.append(data[origin:pos])
                    origin = end
            pos += 1 + length
        if pos >= n:
            self._remaining = pos - n
            stop = n
        else:
            self._partial += data[pos:]
            self._remaining = 0
            # a notice that may be tapped is held back until it is whole
            stop = pos if data[pos] == _N and self._tapped else n
        if pieces is None:
            return data if stop == n else data[:stop]
        pieces.append(data[origin:stop])
        return b"".join(pieces)

    feed = _feed_python

    def _feed_after_partial(self, data: bytes) -> bytes:
        """Complete the held partial message with `data`, then walk on (the rare path)."""
        partial = self._partial
        # Only a notice under a tap has not been forwarded yet.
        held = bytes(partial) if partial[0] == _N and self._tapped else b""
        n = len(data)
        consumed = 0
        if len(partial) < 5:
            consumed = min(5 - len(partial), n)
            partial += data[:consumed]
            if len(partial) < 5:
                return b"" if held else data
        msg_type = partial[0]
        total: int = 1 + _unpack_int32(partial, 1)[0]
        if msg_type not in self._tracked:
            self._partial = bytearray()
            self._remaining = consumed + total - 5
            return self.feed(data)
        take = min(total - len(partial), n - consumed)
        partial += data[consumed : consumed + take]
        consumed += take
        if len(partial) < total:
            return b"" if held else data
        self._partial = bytearray()
        self._remaining = consumed  # where feed() walks on; what precedes it is unchanged
        if not held:
            self._on_message(msg_type, bytes(partial[5:]))
            return self.feed(data)
        if self._took(bytes(partial[5:])):
            return self.feed(data)[consumed:]
        return held + self.feed(data)

    def _took(self, body: bytes) -> bool:
        """Is this NoticeResponse body a tapped one? If so it was handed over."""
        if _MARKED not in body or self._on_notice is None:
            return False
        fields = parse_error_fields(body)
        message = fields.get("M", "")
        if message not in self._markers:
            return False
        self._on_notice(message, fields.get("D", ""))
        return True

    def _on_message(self, msg_type: int, body: bytes) -> None:
        if msg_type == _Z:
            self.status = body[0]
            self.ready_count += 1
        elif msg_type == _K:
            self.backend_key = body
        elif msg_type == _S:
            name, _, rest = body.partition(b"\0")
            self.parameters[name.decode()] = rest.rstrip(b"\0").decode("utf-8", "replace")
        elif body.startswith(b"SFATAL\0") or body.startswith(b"SPANIC\0"):
            self.fatal_seen = True
        elif msg_type == _E and parse_error_fields(body).get("S") in ("FATAL", "PANIC"):
            self.fatal_seen = True


class ServerTrackerPy(ServerTrackerBase):
    """The server tracker in pure Python."""

    __slots__ = (
        "_markers",
        "_on_notice",
        "_partial",
        "_remaining",
        "_tapped",
        "_tracked",
        "backend_key",
        "fatal_seen",
        "parameters",
        "ready_count",
        "status",
    )
