"""Structured, quiet logging: key=value lines on stderr."""

from __future__ import annotations

import logging
import sys


def configure(level: str) -> None:
    """Install one stderr handler at `level` for the pgdurable loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger("pgdurable")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
