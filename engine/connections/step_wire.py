"""Between a step connection's transport and asyncpg: the engine's own pipelined requests
(flights), the meter on a step's reply, and the transaction status of the last
ReadyForQuery, whoever asked.

asyncpg sends one request and waits for its answer; it cannot pipeline. A step's
bookkeeping, its session reset, its COMMIT and the next step's BEGIN need no answer in
between, so the engine writes them as one flight of protocol messages straight to the
transport and this protocol takes their answers off the stream (up to the flight's last
ReadyForQuery) before passing the rest on to asyncpg. A flight is only written while
asyncpg waits for nothing, so the answers come in the order asked: an earlier flight's,
then asyncpg's. A flight may also precede an asyncpg request without waiting for it (a
step's BEGIN before its statement: one round trip for both): an error in the flight then
aborts the transaction, and the statement after it fails without running (25P02).

The extended protocol's Sync rules decide what an error skips: after an ErrorResponse the
server ignores messages up to the next Sync; a simple Query is its own sync point, and a
failed statement in it ends the Query. In an aborted transaction every statement but
ROLLBACK fails, so a COMMIT sent after a failed bookkeeping call never commits anything.

The meter counts the bytes passed to asyncpg while armed (engine/executors/step_rows.py)
and closes the connection once a step's reply passes its budget.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

READY, ERROR, COMPLETE, DATA_ROW, EMPTY = b"Z"[0], b"E"[0], b"C"[0], b"D"[0], b"I"[0]
ASYNC_MESSAGES = frozenset(b"SNA")  # ParameterStatus, NoticeResponse, NotificationResponse
IN_TRANSACTION = frozenset(b"TE")
SYNC = b"S\x00\x00\x00\x04"
EXECUTE = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"  # the unnamed portal, all rows


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def query(sql: str) -> bytes:
    """A simple Query: its statements run in order, the first error ends it."""
    return _message(b"Q", sql.encode() + b"\x00")


def parse(name: str, sql: str) -> bytes:
    """Prepare `sql` as the named statement `name` (parameter types inferred)."""
    return _message(b"P", name.encode() + b"\x00" + sql.encode() + b"\x00\x00\x00")


def close_statement(name: str) -> bytes:
    """Close the named statement (closing one that does not exist is no error)."""
    return _message(b"C", b"S" + name.encode() + b"\x00")


def call(name: str, arguments: Sequence[object]) -> bytes:
    """Bind the named statement to `arguments` (as text, None as NULL) and execute it,
    its rows in text; no Sync (the flight adds one)."""
    parts = [b"\x00", name.encode(), b"\x00\x00\x00", len(arguments).to_bytes(2, "big")]
    for argument in arguments:
        if argument is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            value = str(argument).encode()
            parts += [len(value).to_bytes(4, "big"), value]
    parts.append(b"\x00\x00")
    return _message(b"B", b"".join(parts)) + EXECUTE


@dataclass(slots=True)
class Reply:
    """One statement's answer in a flight: its command tag and first row's first value."""

    tag: str = ""
    value: str | None = None
    rows: int = 0


@dataclass(slots=True)
class FlightResult:
    """A flight's answers in order, the first error (an asyncpg exception, as asyncpg would
    raise it) and the status of its last ReadyForQuery (b'I', b'T' or b'E')."""

    replies: list[Reply] = field(default_factory=list)
    error: Exception | None = None
    status: int = b"I"[0]

    def raise_error(self, cause: BaseException | None = None) -> None:
        """Raise the flight's error, if any (from `cause`: what it made fail after it)."""
        if self.error is not None:
            raise self.error from cause


class Flight:
    """The answers of one flight still to come: up to its `syncs`-th ReadyForQuery."""

    __slots__ = ("future", "reply", "result", "sent", "syncs")

    def __init__(self, syncs: int, future: asyncio.Future[FlightResult]) -> None:
        self.syncs = syncs
        self.future = future
        self.sent = time.monotonic()
        self.result = FlightResult()
        self.reply = Reply()

    def take(self, kind: int, body: bytes) -> bool:
        """One message of the flight's answers; True once it was the last."""
        if kind == DATA_ROW:
            if self.reply.rows == 0 and int.from_bytes(body[:2], "big") > 0:
                size = int.from_bytes(body[2:6], "big", signed=True)
                self.reply.value = None if size < 0 else body[6 : 6 + size].decode()
            self.reply.rows += 1
        elif kind == COMPLETE or kind == EMPTY:
            self.reply.tag = body[:-1].decode() if kind == COMPLETE else ""
            self.result.replies.append(self.reply)
            self.reply = Reply()
        elif kind == ERROR:
            self.reply = Reply()
            if self.result.error is None:
                self.result.error = asyncpg.PostgresError.new(_fields(body))
        elif kind == READY:
            self.result.status = body[0]
            self.syncs -= 1
            if self.syncs == 0:
                if not self.future.done():
                    self.future.set_result(self.result)
                return True
        return False  # ParseComplete, BindComplete, RowDescription, NoData, ...

    def lost(self, exc: Exception | None) -> None:
        if not self.future.done():
            self.result.error = asyncpg.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
            self.result.error.__cause__ = exc
            self.future.set_result(self.result)


def _fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


class StepWire(asyncio.Protocol):
    """A step connection's protocol in front of asyncpg's (see the module's docstring)."""

    def __init__(self, inner: Any, transport: Any) -> None:
        self.inner = inner
        self.transport = transport
        self.budget: int | None = None  # the meter: bytes asyncpg may still read
        self.passed = 0  # bytes passed on to asyncpg (not counting async messages in flights)
        self._armed_at = 0  # `passed` when the meter was armed
        self.exceeded = False
        self.status = b"I"[0]  # of the last ReadyForQuery on the connection
        # seconds from a flight's write to its last answer, on average (a tenth of the way
        # per flight): a round trip to PostgreSQL, and its wait for a busy server's CPU
        self.round_trip = 0.0
        self._timed = False
        self._flights: deque[Flight] = deque()
        self._ours = bytearray()  # answers of our flights not yet taken
        self._head = b""  # a message header split between two reads passed on
        self._skip = 0  # bytes of the message passed on last still to come
        sock = transport.get_extra_info("socket")
        self._cork = sock if sock is not None and sock.family != socket.AF_UNIX else None

    # -- flights -------------------------------------------------------------------------
    def send(self, messages: Sequence[bytes], syncs: int) -> asyncio.Future[FlightResult]:
        """Write a flight whose answers end with its `syncs`-th ReadyForQuery."""
        future: asyncio.Future[FlightResult] = asyncio.get_running_loop().create_future()
        if self.transport.is_closing():
            flight = Flight(syncs, future)
            flight.lost(None)
            return future
        self._flights.append(Flight(syncs, future))
        self.transport.write(b"".join(messages))
        return future

    def send_before(self, messages: Sequence[bytes], syncs: int) -> asyncio.Future[FlightResult]:
        """A flight that asyncpg's next request follows without waiting: both leave in one
        TCP segment. The socket stays corked for two turns of the loop: asyncpg writes in
        this one, or in the next when the statement runs in a task of its own (a new
        instance's first step)."""
        cork = self._cork
        if cork is not None:
            try:
                cork.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                loop = asyncio.get_running_loop()
                loop.call_soon(loop.call_soon, self._uncork, cork)
            except (OSError, ValueError):  # the socket closed (uvloop: fd -1): nothing to cork
                pass
        return self.send(messages, syncs)

    @staticmethod
    def _uncork(sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        except (OSError, ValueError):  # closed meanwhile (uvloop: fd -1)
            pass

    # -- the meter -------------------------------------------------------------------------
    def arm(self, budget: int) -> None:
        self.budget, self.exceeded = budget, False
        self._armed_at = self.passed

    @property
    def answering(self) -> bool:
        """Has the statement the meter is armed for begun to answer?"""
        return self.budget is not None and self.passed > self._armed_at

    # -- asyncio.Protocol ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._flights:
            self._ours += data
            self._take_ours()
            if self._flights or not self._ours:
                return
            data = bytes(self._ours)
            self._ours.clear()
        self._pass_on(data)

    def _take_ours(self) -> None:
        buf, pos, size = self._ours, 0, len(self._ours)
        while self._flights and size - pos >= 5:
            end = pos + 1 + int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if end > size:
                break
            kind = buf[pos]
            if kind in ASYNC_MESSAGES:  # asyncpg keeps the server's settings and notices
                self.inner.data_received(bytes(buf[pos:end]))
            else:
                if kind == READY:
                    self.status = buf[pos + 5]
                if self._flights[0].take(kind, bytes(buf[pos + 5 : end])):
                    self._timed_flight(self._flights.popleft())
            pos = end
        del buf[:pos]

    def _timed_flight(self, flight: Flight) -> None:
        took = time.monotonic() - flight.sent
        if not self._timed:
            self.round_trip, self._timed = took, True
        else:
            self.round_trip += (took - self.round_trip) / 10

    def _pass_on(self, data: bytes) -> None:
        self.passed += len(data)
        if self.budget is not None:
            self.budget -= len(data)
            if self.budget < 0:
                self.budget, self.exceeded = None, True
                self.transport.abort()  # asyncpg's pending call fails: the connection died
                return
        self._track(data)
        self.inner.data_received(data)

    def _track(self, data: bytes) -> None:
        """Walk the headers of what asyncpg reads, for the status of its ReadyForQuery."""
        if self._head:
            data = self._head + data
            self._head = b""
        pos, size = self._skip, len(data)
        while pos + 5 <= size:
            if data[pos] == READY:
                if pos + 6 > size:
                    break
                self.status = data[pos + 5]
            pos += 1 + int.from_bytes(data[pos + 1 : pos + 5], "big")
        if pos < size:
            self._head, self._skip = data[pos:], 0
        else:
            self._skip = pos - size

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received()) if hasattr(self.inner, "eof_received") else None

    def connection_lost(self, exc: Exception | None) -> None:
        while self._flights:
            self._flights.popleft().lost(exc)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    @property
    def in_transaction(self) -> bool:
        """Is the session in a transaction block (or will it be, once a flight in progress
        has been answered)? asyncpg's own flag misses what flights did."""
        return self.status in IN_TRANSACTION
