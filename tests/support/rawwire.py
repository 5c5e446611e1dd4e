"""A tiny raw-socket PostgreSQL client for crafting bad or precisely-timed traffic."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pgdurable_proxy.wire.messages import parse_error_fields


def startup_packet(user: str = "postgres", database: str = "postgres", **params: str) -> bytes:
    """A protocol 3.0 StartupMessage."""
    body = struct.pack("!I", 196608)
    for key, value in {"user": user, "database": database, **params}.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query(sql: str) -> bytes:
    """A simple Query message."""
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


@dataclass
class Message:
    """One backend message."""

    type: str
    body: bytes

    @property
    def fields(self) -> dict[str, str]:
        return parse_error_fields(self.body)


class RawConnection:
    """A blocking socket speaking just enough protocol for tests."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_message(self) -> Message | None:
        """Next message, or None at EOF."""
        while True:
            if len(self.buffer) >= 5:
                (length,) = struct.unpack_from("!I", self.buffer, 1)
                if len(self.buffer) >= 1 + length:
                    msg = Message(chr(self.buffer[0]), self.buffer[5 : 1 + length])
                    self.buffer = self.buffer[1 + length :]
                    return msg
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk

    def read_until(self, msg_type: str) -> list[Message]:
        """Messages up to and including the first of `msg_type` (or EOF)."""
        seen = []
        while (msg := self.read_message()) is not None:
            seen.append(msg)
            if msg.type == msg_type:
                break
        return seen

    def login(self, user: str = "postgres", **params: str) -> list[Message]:
        """Send a StartupMessage (trust auth) and read up to ReadyForQuery."""
        self.send(startup_packet(user, **params))
        return self.read_until("Z")

    def read_all(self) -> bytes:
        """Everything until the peer closes."""
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()
