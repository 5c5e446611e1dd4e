"""pg_durable's truthiness of a condition's result (§6.5)."""

from __future__ import annotations

import json
import re
from typing import Any

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def result_is_true(raw: str) -> bool:
    """Judge a condition node's result text."""
    try:
        value: Any = json.loads(raw)
    except ValueError:
        return text_is_true(raw)
    if isinstance(value, dict) and isinstance(value.get("rows"), list):
        rows = value["rows"]
        if not rows:
            return False
        first = rows[0]
        value = next(iter(first.values()), None) if isinstance(first, dict) and first else None
    return value_is_true(value)


def value_is_true(value: Any) -> bool:
    """Truthiness of one JSON value."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return text_is_true(value)
    return len(value) > 0


def text_is_true(text: str) -> bool:
    """Strings: empty false; true/t/yes and false/f/no; numbers by value; else true."""
    stripped = text.strip()
    lowered = stripped.lower()
    if not stripped or lowered in ("false", "f", "no"):
        return False
    if lowered in ("true", "t", "yes"):
        return True
    if _NUMBER.match(stripped):
        return float(stripped) != 0
    return True
