"""Header-only framing of both directions: the relay's hot path.

Client→server: every message is checked (type, length) but only `Q` and `P` bodies are
ever looked at, only once the login succeeded, and only when a cheap byte pre-filter
hits. Everything else, CopyData included, streams through as the original bytes.
Server→client: bodies are skipped; only ReadyForQuery, BackendKeyData, ParameterStatus
and ErrorResponse are read, so the relay knows where message boundaries are (to write its
own messages safely) and the session's transaction status.

Measured on the project machine (2 vCPU, CPython 3.11): `ClientFramer.feed` on one
pgbench `-S` simple Query ≈ 1.1 µs, `ServerTracker.feed` on its 4-message reply ≈ 1.4 µs
(`tests/bench/framing.py`).
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

_Q = ord("Q")
_P = ord("P")
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
    return b"df" in lowered or b"pg_durable" in lowered


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
        n = len(data)
        if not self._skip and not self._held and n >= 5:
            # Fast path: the chunk is exactly one message (pgbench -S simple, most Q traffic).
            msg_type = data[0]
            length = _unpack_int32(data, 1)[0]
            if length + 1 == n and msg_type in _SINGLE_FAST and 4 <= length <= SMALL_MESSAGE_LIMIT:
                if msg_type == _Q:
                    self.requests += 1
                    if is_candidate(data):
                        return self.inspect(msg_type, data) or data
                    return data
                if msg_type == _S:
                    self.requests += 1
                return data
        return self._feed_general(data)

    def _feed_general(self, data: bytes) -> bytes:
        if self._held:
            if self._need and len(self._held) + len(data) < self._need:
                self._held += data
                return b""
            data = bytes(self._held) + data
            self._held.clear()
            self._need = 0
        skip = self._skip
        n = len(data)
        if skip >= n:
            self._skip = skip - n
            return data
        self._skip = 0
        return self._walk(data, skip, n)

    def _walk(self, data: bytes, pos: int, n: int) -> bytes:
        pieces: list[bytes] | None = None
        start = 0
        limit = self.inspect_limit
        while pos + 5 <= n:
            msg_type = data[pos]
            length = _unpack_int32(data, pos + 1)[0]
            if (
                msg_type not in FRONTEND_TYPES
                or length < 4
                or length > LARGE_MESSAGE_LIMIT
                or (length > SMALL_MESSAGE_LIMIT and msg_type in _SMALL_TYPES)
            ):
                _reject(msg_type, length)
            end = pos + 1 + length
            if (msg_type == _Q or msg_type == _P) and length <= limit:
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
_TRACKED = frozenset((_Z, _K, _S, _E))
IDLE = ord("I")


class ServerTracker:
    """Follows server→client message boundaries without copying bodies."""

    __slots__ = (
        "_partial",
        "_remaining",
        "backend_key",
        "fatal_seen",
        "parameters",
        "ready_count",
        "status",
    )

    def __init__(self) -> None:
        self._remaining = 0  # bytes of the current message not seen yet
        self._partial = bytearray()  # header, or whole tracked message, being assembled
        self.status = 0  # last ReadyForQuery status byte (0 before the first one)
        self.ready_count = 0
        self.backend_key = b""  # BackendKeyData body: pid + secret (3.0 or 3.2 length)
        self.parameters: dict[str, str] = {}
        self.fatal_seen = False

    @property
    def at_boundary(self) -> bool:
        """True when the bytes seen so far end exactly on a message boundary."""
        return self._remaining == 0 and not self._partial

    def feed(self, data: bytes) -> None:
        """Observe a chunk from the server (the caller forwards it unchanged)."""
        pos = self._remaining
        n = len(data)
        if self._partial:
            pos = self._complete_partial(data)
        elif pos >= n:
            self._remaining = pos - n
            return
        while pos + 5 <= n:
            msg_type = data[pos]
            end = pos + 1 + _unpack_int32(data, pos + 1)[0]
            if msg_type in _TRACKED:
                if end > n:
                    self._partial += data[pos:]
                    self._remaining = 0
                    return
                if msg_type == _Z:
                    self.status = data[pos + 5]
                    self.ready_count += 1
                else:
                    self._on_message(msg_type, data[pos + 5 : end])
            pos = end
        if pos >= n:
            self._remaining = pos - n
        else:
            self._partial += data[pos:]
            self._remaining = 0

    def _complete_partial(self, data: bytes) -> int:
        """Extend the held partial message with `data`; return where walking resumes."""
        partial = self._partial
        if len(partial) < 5:
            take = 5 - len(partial)
            partial += data[:take]
            if len(partial) < 5:
                return len(data)
            consumed = take
        else:
            consumed = 0
        msg_type = partial[0]
        total: int = 1 + _unpack_int32(partial, 1)[0]
        if msg_type not in _TRACKED:
            self._partial = bytearray()
            return consumed + total - 5
        take = min(total - len(partial), len(data) - consumed)
        partial += data[consumed : consumed + take]
        consumed += take
        if len(partial) == total:
            self._partial = bytearray()
            self._on_message(msg_type, bytes(partial[5:]))
        return consumed if not self._partial else len(data)

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
