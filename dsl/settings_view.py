"""Reading `pg_settings` with rows added: how pg_durable's settings reach `\\dconfig`.

pg_durable's settings are real GUCs, listed in pg_settings. Under pgdurable they are
placeholders, which PostgreSQL never lists there; so a statement that reads pg_settings and
mentions pg_durable (psql's `\\dconfig pg_durable.*`, `SELECT ... FROM pg_settings WHERE name
LIKE 'pg_durable.%'`) gets, in place of each pg_settings in its FROM clauses, a subquery
that is pg_settings plus a row per setting (the relay supplies that subquery).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pglast import parser

from dsl.classify import MAX_EXACT_SQL_CHARS, MAX_TREE_JSON_CHARS
from dsl.tree import nodes_of

VIEW = "pg_settings"
_SCHEMA = "pg_catalog"
# The text of a reference at its location: [pg_catalog.]pg_settings, either part quoted.
_REFERENCE = re.compile(
    rb'(?:(?:pg_catalog|"pg_catalog")\s*\.\s*)?(?:pg_settings|"pg_settings")', re.I
)


def mentions_settings_view(sql: bytes) -> bool:
    """Cheap test on raw text before any parsing: could it read pg_settings about pg_durable?"""
    lowered = sql.lower()
    return b"pg_settings" in lowered and b"pg_durable" in lowered


def with_settings_rows(sql: str, relation: str) -> str | None:
    """`sql` with each pg_settings its FROM clauses read replaced by `relation` (a
    parenthesised subquery with pg_settings' columns); None when there is none to replace."""
    if len(sql) > MAX_EXACT_SQL_CHARS:  # parsing it would stall the relay (classify.py)
        return None
    try:
        text = parser.parse_sql_json(sql)
        if len(text) > MAX_TREE_JSON_CHARS:
            return None
        tree = json.loads(text)
    except (parser.ParseError, RecursionError):
        return None
    data = sql.encode()
    spans = sorted(_reference_spans(tree, data))
    if not spans:
        return None
    pieces = []
    cursor = 0
    for start, end, aliased in spans:
        pieces += [data[cursor:start], relation.encode()]
        if not aliased:
            pieces.append(b" AS " + VIEW.encode())
        cursor = end
    pieces.append(data[cursor:])
    return b"".join(pieces).decode()


def _reference_spans(tree: dict[str, Any], data: bytes) -> set[tuple[int, int, bool]]:
    """(start, end, has an alias) of each pg_settings a SELECT reads in its FROM clause."""
    shadowed = any(cte.get("ctename") == VIEW for cte in nodes_of(tree, "CommonTableExpr"))
    spans = set()
    for select in nodes_of(tree, "SelectStmt"):
        for item in _from_items(select.get("fromClause", [])):
            schema = item.get("schemaname")
            if item.get("relname") != VIEW or schema not in (None, _SCHEMA):
                continue
            if not item.get("inh", False) or (schema is None and shadowed):
                continue  # FROM ONLY, or a WITH query of that name
            start = item.get("location", -1)
            match = _REFERENCE.match(data, start) if start >= 0 else None
            if match is not None:
                spans.add((start, match.end(), "alias" in item))
    return spans


def _from_items(items: list[Any]) -> list[dict[str, Any]]:
    """The RangeVars of a FROM list, through its joins."""
    found = []
    stack = list(items)
    while stack:
        item = stack.pop()
        if "RangeVar" in item:
            found.append(item["RangeVar"])
        elif "JoinExpr" in item:
            stack += [item["JoinExpr"].get("larg", {}), item["JoinExpr"].get("rarg", {})]
    return found
