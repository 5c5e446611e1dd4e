"""Walking libpg_query's JSON parse trees (plain dicts and lists)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def nodes_of(tree: Any, node_type: str) -> Iterator[dict[str, Any]]:
    """Every node of `node_type` in a libpg_query JSON tree, depth first."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == node_type and isinstance(value, dict):
                    yield value
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def df_function_name(call: dict[str, Any]) -> str | None:
    """`start` for a FuncCall of `df.start(...)`; None for anything outside schema df."""
    names = [
        part["String"].get("sval", "") for part in call.get("funcname", []) if "String" in part
    ]
    if len(names) == 2 and names[0] == "df":
        return str(names[1])
    return None
