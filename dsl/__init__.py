"""The workflow DSL: pure functions over SQL text, built on pglast (no I/O)."""

from dsl.classify import Classification, StatementKind, classify

__all__ = ["Classification", "StatementKind", "classify"]
