"""Decide whether a statement is pgdurable's business: calls into `df.*` or CREATE EXTENSION.

Only statements that pass the relay's byte pre-filter get here, and the relay caches the
verdict by exact SQL text, so this runs once per distinct candidate statement. It uses
libpg_query's JSON output (≈ 15 µs for 200 characters) rather than pglast's Python AST
(≈ 100–250 µs), since a verdict needs only a walk over plain dicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pglast import parser

DSL_OPERATORS = frozenset({"~>", "|=>", "?>", "!>", "@>", "&", "|"})
EXTENSION_NAME = "pg_durable"


class StatementKind(StrEnum):
    """What the relay should do with a statement."""

    PASSTHROUGH = "passthrough"  # not ours: forward unchanged
    WORKFLOW = "workflow"  # calls df.* functions
    CREATE_EXTENSION = "create_extension"  # CREATE EXTENSION pg_durable
    UNPARSABLE = "unparsable"  # the server will report the syntax error itself


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one Query/Parse text."""

    kind: StatementKind
    df_functions: frozenset[str] = frozenset()
    uses_dsl_operators: bool = False
    statement_count: int = 0


def classify(sql: str) -> Classification:
    """Classify one Query/Parse text (which may hold several statements)."""
    try:
        tree = json.loads(parser.parse_sql_json(sql))
    except parser.ParseError:
        return Classification(StatementKind.UNPARSABLE)
    statements = [raw["stmt"] for raw in tree.get("stmts", ())]
    if any(_is_create_extension(stmt) for stmt in statements):
        return Classification(StatementKind.CREATE_EXTENSION, statement_count=len(statements))
    functions: set[str] = set()
    uses_operators = False
    for call in _nodes_of(statements, "FuncCall"):
        name = _df_function_name(call)
        if name is None:
            continue
        functions.add(name)
        uses_operators = uses_operators or any(
            _operator_name(expr) in DSL_OPERATORS
            for expr in _nodes_of(call.get("args", []), "A_Expr")
        )
    if not functions:
        return Classification(StatementKind.PASSTHROUGH, statement_count=len(statements))
    return Classification(
        StatementKind.WORKFLOW, frozenset(functions), uses_operators, len(statements)
    )


def _is_create_extension(stmt: dict[str, Any]) -> bool:
    node = stmt.get("CreateExtensionStmt")
    return node is not None and node.get("extname") == EXTENSION_NAME


def _df_function_name(call: dict[str, Any]) -> str | None:
    names = [part["String"]["sval"] for part in call.get("funcname", []) if "String" in part]
    if len(names) == 2 and names[0] == "df":
        return str(names[1])
    return None


def _operator_name(expr: dict[str, Any]) -> str | None:
    names = expr.get("name", [])
    if len(names) == 1 and "String" in names[0]:
        return str(names[0]["String"]["sval"])
    return None


def _nodes_of(tree: Any, node_type: str) -> Iterator[dict[str, Any]]:
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
