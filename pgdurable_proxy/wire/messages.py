"""Builders for the few backend messages pgdurable ever writes itself."""

from __future__ import annotations

import struct

_INT32 = struct.Struct("!I")


def frame(msg_type: bytes, body: bytes) -> bytes:
    """Frame a typed message: type byte, int32 length (self-inclusive), body."""
    return msg_type + _INT32.pack(len(body) + 4) + body


def error_response(
    sqlstate: str,
    message: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
    position: int | None = None,
) -> bytes:
    """An ErrorResponse ('E') with the fields PostgreSQL itself sends."""
    fields = [
        (b"S", severity),
        (b"V", severity),
        (b"C", sqlstate),
        (b"M", message),
    ]
    if detail is not None:
        fields.append((b"D", detail))
    if hint is not None:
        fields.append((b"H", hint))
    if position is not None:
        fields.append((b"P", str(position)))
    body = b"".join(code + value.encode() + b"\0" for code, value in fields) + b"\0"
    return frame(b"E", body)


def parse_error_fields(body: bytes) -> dict[str, str]:
    """Decode the fields of an ErrorResponse/NoticeResponse body into {code: value}."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        end = body.index(b"\0", pos + 1)
        fields[chr(body[pos])] = body[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
    return fields


def build_error_body(fields: dict[str, str]) -> bytes:
    """Encode {code: value} back into an ErrorResponse/NoticeResponse body."""
    parts = [code.encode() + value.encode() + b"\0" for code, value in fields.items()]
    return b"".join(parts) + b"\0"


TERMINATE = frame(b"X", b"")


SCRAM_PLUS = b"SCRAM-SHA-256-PLUS\0"


def strip_channel_binding(message: bytes) -> bytes:
    """Drop SCRAM-SHA-256-PLUS from an AuthenticationSASL message, if it is one.

    When pgdurable reaches PostgreSQL over TLS but the client reached pgdurable in
    plaintext, the server offers channel binding that the client cannot use (libpq refuses
    the offer outright); without -PLUS the client answers 'n' and SCRAM proceeds.
    """
    if message[:1] != b"R" or message[5:9] != b"\x00\x00\x00\x0a" or SCRAM_PLUS not in message:
        return message
    body = message[5:].replace(SCRAM_PLUS, b"", 1)
    return frame(b"R", body)
