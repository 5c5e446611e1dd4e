"""The workflow DSL: pure functions over SQL text, built on pglast (no I/O)."""

from dsl.classify import (
    EXTENSION_MARKER,
    EXTENSION_TAG,
    Classification,
    StatementKind,
    classify,
)

__all__ = ["EXTENSION_MARKER", "EXTENSION_TAG", "Classification", "StatementKind", "classify"]
