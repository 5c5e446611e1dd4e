"""The untyped first packets of a connection: SSL/GSS/cancel requests and StartupMessage."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pgdurable_proxy.wire.errors import ProtocolViolation

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
PROTOCOL_MAJOR = 3
# PostgreSQL's MAX_STARTUP_PACKET_LENGTH: longer first packets are refused.
MAX_STARTUP_PACKET_LENGTH = 10000
# A 3.2 CancelRequest carries a key of up to 256 bytes after pid.
MAX_CANCEL_KEY_LENGTH = 256

_HEADER = struct.Struct("!II")


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The client asks whether it may switch to TLS."""


@dataclass(frozen=True, slots=True)
class GSSEncRequest:
    """The client asks for GSSAPI encryption (always refused)."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A cancel key to be forwarded verbatim to the server."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """A protocol 3.x StartupMessage; `raw` is forwarded unchanged."""

    raw: bytes
    major: int
    minor: int
    params: dict[str, str]


StartupPacket = SSLRequest | GSSEncRequest | CancelRequest | StartupMessage


def startup_packet_length(buffer: bytes | bytearray) -> int | None:
    """Length of the first packet in `buffer`, None until 4 bytes are there; checks bounds."""
    if len(buffer) < 4:
        return None
    (length,) = struct.unpack_from("!I", buffer, 0)
    if length < 8 or length > MAX_STARTUP_PACKET_LENGTH:
        raise ProtocolViolation("invalid length of startup packet")
    return int(length)


def parse_startup_packet(packet: bytes) -> StartupPacket:
    """Decode one complete untyped first packet (length prefix included)."""
    length, code = _HEADER.unpack_from(packet, 0)
    if length != len(packet):
        raise ProtocolViolation("invalid length of startup packet")
    if code == SSL_REQUEST_CODE and length == 8:
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE and length == 8:
        return GSSEncRequest()
    if code == CANCEL_REQUEST_CODE:
        if not 16 <= length <= 12 + MAX_CANCEL_KEY_LENGTH:
            raise ProtocolViolation("invalid length of cancel request packet")
        return CancelRequest(packet)
    major, minor = code >> 16, code & 0xFFFF
    if major != PROTOCOL_MAJOR:
        raise ProtocolViolation(
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2"
        )
    return StartupMessage(packet, major, minor, _parse_params(packet[8:]))


def _parse_params(body: bytes) -> dict[str, str]:
    """Decode the name/value pairs of a StartupMessage body."""
    if not body.endswith(b"\0"):
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    # name\0value\0 ... \0: drop the final terminator, then the empty tail of the last value
    items = body[:-1].split(b"\0")[:-1]
    if len(items) % 2:
        raise ProtocolViolation("invalid startup packet layout: parameter without a value")
    try:
        decoded = [item.decode("utf-8") for item in items]
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("invalid startup packet: parameters are not UTF-8") from exc
    return dict(zip(decoded[::2], decoded[1::2], strict=True))


def with_parameters(message: StartupMessage, extra: bytes, drop_prefix: str) -> bytes:
    """`message` with the client's parameters named `drop_prefix`... (any case) left out and
    `extra` (name\\0value\\0 pairs) added after the rest, so that the server takes these."""
    if not extra:
        return message.raw
    if any(name.lower().startswith(drop_prefix) for name in message.params):
        kept = b"".join(
            name.encode() + b"\0" + value.encode() + b"\0"
            for name, value in message.params.items()
            if not name.lower().startswith(drop_prefix)
        )
    else:
        kept = message.raw[8:-1]
    body = message.raw[4:8] + kept + extra + b"\0"
    return struct.pack("!I", len(body) + 4) + body
