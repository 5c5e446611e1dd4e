"""Header-only framing of both directions: the relay's hot path.

Client→server: every message is checked (type, length) but only `Q` and `P` bodies are
ever looked at, only once the login succeeded, and only when a cheap byte pre-filter
hits. Everything else, CopyData included, streams through as the original bytes.
Server→client: bodies are skipped; only ReadyForQuery, BackendKeyData, ParameterStatus
and ErrorResponse are read, so the relay knows where message boundaries are (to write its
own messages safely) and the session's transaction status; and, on sessions of the catalog's
database, NoticeResponses, so that pgdurable's own notices are taken out (notice tap).

Per pgbench `-S` transaction (request and reply, `python -m tests.bench.relay_path`) the
relay adds ≈ 1.3–2.5 µs of Python to a bare pipe's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pgdurable_proxy.wire.errors import ProtocolViolation
from pgdurable_proxy.wire.messages import parse_error_fields

_unpack_int32 = struct.Struct("!I").unpack_from

# Frontend message types of protocol 3.x (after the startup packet).
FRONTEND_TYPES = frozenset(b"BCDEFHPQSXdcfp")
# Types PostgreSQL reads with PQ_SMALL_MESSAGE_LIMIT; the rest may be up to 1 GB.
_SMALL_TYPES = frozenset(b"CDEHSX")
SMALL_MESSAGE_LIMIT = 10000
LARGE_MESSAGE_LIMIT = 0x3FFFFFFF
# Q/P messages up to this size are buffered whole and offered to the inspector; larger
# ones stream through uninspected (the server-side df functions still apply).
INSPECT_LIMIT = 16 * 1024 * 1024

# The longest message PostgreSQL reads, per type byte; 0 for what is no frontend type.
_MAX_LENGTH = tuple(
    0
    if t not in FRONTEND_TYPES
    else SMALL_MESSAGE_LIMIT
    if t in _SMALL_TYPES
    else LARGE_MESSAGE_LIMIT
    for t in range(256)
)
_HELD_TYPES = frozenset(b"QP")  # held whole and offered to the inspector

_Q = ord("Q")
_X = ord("X")
_S = ord("S")
_COUNTED = frozenset(b"QSFX")
# Types the one-message fast path may pass without a walk: Q (pre-filtered), Sync and
# the small extended-protocol messages. Everything else takes the general path.
_SINGLE_FAST = frozenset(b"QSBDEHC")

Inspector = Callable[[int, bytes], bytes | None]
"""Called with (message type, whole message); returns replacement bytes or None."""


def is_candidate(message: bytes) -> bool:
    """The pre-filter: could this Query/Parse mention the df schema or pg_durable at all?"""
    lowered = message.lower()
    # find, not `in`: bytes.__contains__ first tries the needle as an integer and formats a
    # TypeError it then drops (CPython 3.11), which costs more than the search itself
    return lowered.find(b"df") >= 0 or lowered.find(b"pg_durable") >= 0


class ClientFramer:
    """Frames client→server bytes; returns what to forward now."""

    __slots__ = (
        "_held",
        "_inspector",
        "_need",
        "_skip",
        "inspect",
        "inspect_limit",
        "requests",
        "terminated",
    )

    def __init__(self, inspect: Inspector, *, inspecting: bool = True) -> None:
        # Until start_inspecting() (the login succeeded), Q/P stream through like any
        # message: an unauthenticated client can make pgdurable neither hold nor parse text.
        self._inspector = inspect
        self.inspect: Inspector = inspect if inspecting else _no_inspection
        self.inspect_limit = INSPECT_LIMIT if inspecting else 0
        # Messages that each earn one ReadyForQuery: the StartupMessage, then Query, Sync and
        # FunctionCall. More requests than ReadyForQuery seen means the server is busy.
        self.requests = 1
        self.terminated = False  # the client sent Terminate: an upstream close is expected
        self._skip = 0  # bytes of the current (streamed) message still to pass
        self._held = bytearray()  # an incomplete header or an incomplete Q/P message
        self._need = 0  # total length of the held message once known

    def start_inspecting(self) -> None:
        """From the next message on, hold whole Q/P messages and offer candidates."""
        self.inspect = self._inspector
        self.inspect_limit = INSPECT_LIMIT

    @property
    def at_boundary(self) -> bool:
        """True when everything forwarded so far ends on a message boundary."""
        return self._skip == 0 and not self._held

    def feed(self, data: bytes) -> bytes:
        """Consume a chunk from the client; return the bytes to send upstream now."""
        if self._held:
            if self._need and len(self._held) + len(data) < self._need:
                self._held += data
                return b""
            data = bytes(self._held) + data
            self._held.clear()
            self._need = 0
        pos = self._skip
        n = len(data)
        if pos >= n:
            self._skip = pos - n
            return data
        self._skip = 0
        if pos == 0 and n >= 5:
            # The chunk may be exactly one message (pgbench -S simple, most Q traffic).
            msg_type = data[0]
            (length,) = _unpack_int32(data, 1)
            if length + 1 == n and msg_type in _SINGLE_FAST and length <= SMALL_MESSAGE_LIMIT:
                if msg_type == _Q:
                    self.requests += 1
                    if is_candidate(data):
                        return self.inspect(msg_type, data) or data
                elif msg_type == _S:
                    self.requests += 1
                return data
        return self._walk(data, pos, n)

    def _walk(self, data: bytes, pos: int, n: int) -> bytes:
        pieces: list[bytes] | None = None
        start = 0
        limit = self.inspect_limit
        max_length = _MAX_LENGTH
        while pos + 5 <= n:
            msg_type = data[pos]
            (length,) = _unpack_int32(data, pos + 1)
            if not 4 <= length <= max_length[msg_type]:
                _reject(msg_type, length)
            end = pos + 1 + length
            if msg_type in _HELD_TYPES and length <= limit:
                if end > n:
                    self._hold(data, pos, end - pos)
                    return _emit(pieces, data, start, pos)
                message = data if pos == 0 and end == n else data[pos:end]
                if is_candidate(message):
                    replacement = self.inspect(msg_type, message)
                    if replacement is not None:
                        if pieces is None:
                            pieces = []
                        pieces.append(data[start:pos])
                        pieces.append(replacement)
                        start = end
            if msg_type in _COUNTED:  # after any hold: a held message is walked again
                if msg_type == _X:
                    self.terminated = True
                else:
                    self.requests += 1
            pos = end
        if pos > n:
            self._skip = pos - n
        elif pos < n:
            self._hold(data, pos, 0)
            return _emit(pieces, data, start, pos)
        return _emit(pieces, data, start, n)

    def _hold(self, data: bytes, pos: int, need: int) -> None:
        self._held += data[pos:]
        self._need = need


def _no_inspection(msg_type: int, message: bytes) -> bytes | None:
    return None


def _emit(pieces: list[bytes] | None, data: bytes, start: int, stop: int) -> bytes:
    if pieces is None:
        return data if start == 0 and stop == len(data) else data[start:stop]
    pieces.append(data[start:stop])
    return b"".join(pieces)


def _reject(msg_type: int, length: int) -> None:
    if msg_type not in FRONTEND_TYPES:
        raise ProtocolViolation(f"invalid frontend message type {msg_type}")
    raise ProtocolViolation(f"invalid message length {length} for message type {msg_type}")


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


class ServerTracker:
    """Follows server→client message boundaries without copying bodies.

    With a notice tap (`tap_notices`), NoticeResponses whose message is one of the given
    markers are taken out of the stream and handed over: that is how a backend asks pgdurable
    for something from inside a statement (df.signal, df.start(transaction_mode => 'new')),
    whatever called it (psql, a DO block, a PL/pgSQL function). A notice cut across chunks
    is held back until whole; every other message is forwarded as it arrives.
    """

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

    def __init__(self) -> None:
        self._remaining = 0  # bytes of the current message not seen yet
        self._partial = bytearray()  # header, or whole tracked message, being assembled
        self._tracked = _TRACKED
        self._tapped = False  # NoticeResponses are tracked too
        self._markers: frozenset[str] = frozenset()
        self._on_notice: NoticeHandler | None = None
        self.status = 0  # last ReadyForQuery status byte (0 before the first one)
        self.ready_count = 0
        self.backend_key = b""  # BackendKeyData body: pid + secret (3.0 or 3.2 length)
        self.parameters: dict[str, str] = {}
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

    def feed(self, data: bytes) -> bytes:
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
