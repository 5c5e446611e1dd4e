"""Typed engine errors; each carries the SQLSTATE a client would see."""


class EngineError(Exception):
    """Base of the engine's errors (internal: XX000)."""

    sqlstate = "XX000"


class MigrationError(EngineError):
    """The catalog could not be installed or upgraded."""

    sqlstate = "55000"
