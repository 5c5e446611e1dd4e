"""Decode libpg_query's JSON parse trees of any depth.

`json.loads` recurses once per nesting level and stops at the interpreter's recursion
limit, which statements PostgreSQL accepts reach: `1+1+…+1` with 800 terms nests its
expression tree ~1,600 levels deep. `loads` keeps its own stack instead; the classifier
falls back to it only when `json.loads` runs out of depth, so ordinary statements keep the
C decoder's speed.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(
    r"[ \t\n\r]*(?:(?P<open>[{\[])|(?P<close>[}\]])|(?P<sep>[,:])|(?P<str>\")"
    r"|(?P<lit>true|false|null|-?[0-9][0-9.eE+-]*))"
)
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]


def loads(text: str) -> Any:
    """The value of one JSON document, decoded without recursion."""
    root: list[Any] = []
    stack: list[Any] = [root]  # the open containers, innermost last
    keys: list[str | None] = [None]  # per container: the key awaiting its value
    pos = 0
    while (match := _TOKEN.match(text, pos)) is not None:
        pos = match.end()
        kind = match.lastgroup
        if kind == "sep":
            continue
        if kind == "close":
            if len(stack) == 1:
                raise ValueError(f"unbalanced JSON at {pos}")
            stack.pop()
            keys.pop()
            continue
        value: Any
        if kind == "str":
            value, pos = _scanstring(text, pos)
            if type(stack[-1]) is dict and keys[-1] is None:
                keys[-1] = value
                continue
        elif kind == "open":
            value = {} if match.group("open") == "{" else []
        else:
            value = _literal(match.group("lit"))
        _attach(stack[-1], keys, value)
        if kind == "open":
            stack.append(value)
            keys.append(None)
    if len(stack) != 1 or len(root) != 1 or text[pos:].strip():
        raise ValueError(f"invalid JSON at {pos}")
    return root[0]


def _attach(container: Any, keys: list[str | None], value: Any) -> None:
    if type(container) is dict:
        container[keys[-1]] = value
        keys[-1] = None
    else:
        container.append(value)


def _literal(token: str) -> Any:
    if token in _LITERALS:
        return _LITERALS[token]
    if any(c in token for c in ".eE"):
        return float(token)
    return int(token)
