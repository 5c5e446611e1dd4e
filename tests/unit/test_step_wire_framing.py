"""StepWire's framing (engine/connections/step_wire.py): a flight's answers taken off the
stream whatever the reads' boundaries, the rest passed on to asyncpg byte for byte, and
the status of the last ReadyForQuery noted on either side."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from engine.connections.step_wire import StepWire, query


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def _row(*values: bytes | None) -> bytes:
    parts = [len(values).to_bytes(2, "big")]
    for value in values:
        parts.append(b"\xff\xff\xff\xff" if value is None else len(value).to_bytes(4, "big"))
        parts.append(value or b"")
    return _msg(b"D", b"".join(parts))


def _error(state: str, text: str) -> bytes:
    return _msg(b"E", b"SERROR\x00C" + state.encode() + b"\x00M" + text.encode() + b"\x00\x00")


COMPLETE_BEGIN = _msg(b"C", b"BEGIN\x00")
# a flight of two syncs: a call answering 'applied', then a failing Query in the transaction
OURS = (
    _msg(b"2", b"")
    + _msg(b"T", b"\x00\x01x\x00" + b"\x00" * 18)
    + _row(b"applied")
    + _msg(b"C", b"SELECT 1\x00")
    + _msg(b"Z", b"T")
    + _msg(b"S", b"application_name\x00step\x00")  # passed on to asyncpg as it comes
    + COMPLETE_BEGIN
    + _error("22012", "division by zero")
    + _msg(b"Z", b"E")
)
# asyncpg's answer after it: a row of 300 bytes, a NULL, its ReadyForQuery (idle)
THEIRS = _row(b"y" * 300, None) + _msg(b"C", b"SELECT 1\x00") + _msg(b"Z", b"I")


class _Inner:
    def __init__(self) -> None:
        self.received = bytearray()

    def data_received(self, data: bytes) -> None:
        self.received += data


class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()

    def get_extra_info(self, name: str) -> Any:
        return None

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        raise AssertionError("not metered here")


def _feed(wire: StepWire, stream: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in [*cuts, len(stream)]:
        if cut > last:
            wire.data_received(stream[last:cut])
            last = cut


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 64, 10_000])
def test_a_flights_answers_are_taken_off_whatever_the_reads(step: int) -> None:
    async def main() -> None:
        inner, transport = _Inner(), _Transport()
        wire = StepWire(inner, transport)
        future = wire.send([query("SELECT 1")], syncs=2)
        assert transport.written.startswith(b"Q")
        stream = OURS + THEIRS
        _feed(wire, stream, list(range(step, len(stream), step)))
        result = future.result()
        assert [(r.tag, r.value, r.rows) for r in result.replies] == [
            ("SELECT 1", "applied", 1),
            ("BEGIN", None, 0),
        ]
        assert isinstance(result.error, asyncpg.DivisionByZeroError)
        assert result.status == b"E"[0]
        parameter = _msg(b"S", b"application_name\x00step\x00")
        assert bytes(inner.received) == parameter + THEIRS  # asyncpg's bytes, intact
        assert not wire.in_transaction  # asyncpg's ReadyForQuery said idle

    asyncio.run(main())


def test_the_status_of_a_ready_for_query_split_across_reads_is_noted() -> None:
    inner = _Inner()
    wire = StepWire(inner, _Transport())
    stream = _row(b"z" * 10) + _msg(b"C", b"SELECT 1\x00") + _msg(b"Z", b"T")
    for split in range(1, len(stream)):
        wire.status = b"I"[0]
        wire.data_received(stream[:split])
        wire.data_received(stream[split:])
        assert wire.in_transaction, split
    assert bytes(inner.received) == stream * (len(stream) - 1)


def test_a_lost_connection_answers_every_flight_waiting() -> None:
    async def main() -> None:
        inner = _Inner()
        inner.connection_lost = lambda exc: None  # type: ignore[attr-defined]
        wire = StepWire(inner, _Transport())
        first = wire.send([query("SELECT 1")], syncs=1)
        second = wire.send([query("SELECT 2")], syncs=1)
        wire.connection_lost(ConnectionResetError())
        for future in (first, second):
            assert isinstance(future.result().error, asyncpg.ConnectionDoesNotExistError)

    asyncio.run(main())


def test_corking_a_socket_that_closed_meanwhile_is_no_error() -> None:
    """uvloop's socket of a closed transport raises ValueError (fd -1) on setsockopt: the
    cork and the uncork two turns of the loop later must not fail the step or the loop."""

    class _Closing:
        family = 2  # AF_INET

        def __init__(self) -> None:
            self.calls = 0

        def setsockopt(self, *args: object) -> None:
            self.calls += 1
            if self.calls > 1:
                raise ValueError("negative file descriptor")

    class _Transport2(_Transport):
        def __init__(self) -> None:
            super().__init__()
            self.sock = _Closing()

        def get_extra_info(self, name: str) -> Any:
            return self.sock if name == "socket" else None

    async def main() -> None:
        transport = _Transport2()
        wire = StepWire(_Inner(), transport)
        wire.send_before([query("BEGIN")], syncs=1)  # corks; the uncork fails later
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        for _ in range(3):
            await asyncio.sleep(0)
        assert transport.sock.calls == 2 and errors == []
        wire.send_before([query("BEGIN")], syncs=1)  # now the cork itself fails: no error

    asyncio.run(main())
