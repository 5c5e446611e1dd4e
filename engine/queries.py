"""Named SQL blocks from engine/sql/*.sql (queries.sql, step_queries.sql), loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

FILES = ("queries.sql", "step_queries.sql")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Every `-- name: x` block of the SQL files, keyed by name."""
    found: dict[str, str] = {}
    for file in FILES:
        parts = _NAME.split((resources.files("engine") / "sql" / file).read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            assert name not in found, f"query {name} named twice"
            found[name] = body.strip()
    return found


def q(name: str) -> str:
    """The SQL of one named query (KeyError for an unknown name)."""
    return queries()[name]
