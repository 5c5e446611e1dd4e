"""Typed protocol errors, each carrying the SQLSTATE the client is told."""


class WireError(Exception):
    """Base of every error raised by the wire layer."""

    sqlstate = "08P01"


class ProtocolViolation(WireError):
    """The peer broke the frontend/backend protocol (SQLSTATE 08P01)."""

    sqlstate = "08P01"
