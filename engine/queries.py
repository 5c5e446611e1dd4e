"""Named SQL blocks from engine/sql/queries.sql, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Every `-- name: x` block of queries.sql, keyed by name."""
    text = (resources.files("engine") / "sql" / "queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def q(name: str) -> str:
    """The SQL of one named query (KeyError for an unknown name)."""
    return queries()[name]
