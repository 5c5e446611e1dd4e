"""Client→server framing (the relay's hot path, with server_frames.py).

Every message is checked (type, length) but only `Q` and `P` bodies are ever looked at,
only once the login succeeded, and only when a cheap byte pre-filter hits. Everything else,
CopyData included, streams through as the original bytes. frames.py says which
implementation the relay uses.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgdurable_proxy.wire.errors import ProtocolViolation

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


class ClientFramerBase:
    """Frames client→server bytes; returns what to forward now. The logic; the state lives
    in ClientFramerPy's slots or in the compiled core."""

    if not TYPE_CHECKING:  # no state here, but mypy would read () as the whole layout
        __slots__ = ()
    _held: bytearray
    _inspector: Inspector
    _need: int
    _skip: int
    inspect: Inspector
    inspect_limit: int
    requests: int
    terminated: bool

    def __init__(self, inspect: Inspector, *, inspecting: bool = True) -> None:
        # Until start_inspecting() (the login succeeded), Q/P stream through like any
        # message: an unauthenticated client can make pgdurable neither hold nor parse text.
        self._inspector = inspect
        self.inspect = inspect if inspecting else _no_inspection
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

    def _feed_python(self, data: bytes) -> bytes:
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

    feed = _feed_python

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


class ClientFramerPy(ClientFramerBase):
    """The client framer in pure Python."""

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
