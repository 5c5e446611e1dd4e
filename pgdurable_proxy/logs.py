"""Structured, quiet logging: key=value lines on stderr, URL secrets redacted."""

from __future__ import annotations

import logging
import sys

from engine.redaction import redact_urls


class RedactingFormatter(logging.Formatter):
    """Every URL in a line, tracebacks included, with its secrets redacted (pg_durable
    0.2.8): whatever a message or a library's exception quotes."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


def configure(level: str) -> None:
    """Install one stderr handler at `level` for the pgdurable loggers. The libraries'
    warnings (asyncio, aiohttp) stay as Python prints them without a handler (the bare
    message, from WARNING on), redacted too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    ours = logging.getLogger("pgdurable")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    libraries = logging.StreamHandler(sys.stderr)
    libraries.setLevel(logging.WARNING)
    libraries.setFormatter(RedactingFormatter())
    logging.getLogger().handlers[:] = [libraries]
