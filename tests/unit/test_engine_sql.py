"""The engine's own statements resolve no name through a session's search_path.

Several of them run on a workflow owner's step session, right after the owner's SQL, whose
search_path, temporary objects and role defaults the owner controls (an adversarial run had
`$6::jsonb` resolve to a `pg_temp.jsonb` domain whose CHECK saved every plan, lease tokens
included). Every type, function, operator and relation they name is schema-qualified.
"""

from __future__ import annotations

from typing import Any

import pytest
from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, SubLinkType
from pglast.visitors import Visitor

from engine.connections.step_connection import BOOKKEEPING
from engine.queries import queries


class _Ctes(Visitor):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def visit_CommonTableExpr(self, ancestors: Any, node: ast.CommonTableExpr) -> None:
        self.names.add(node.ctename)


class _Unqualified(Visitor):  # type: ignore[misc]
    """Collects every name a statement leaves to the search_path."""

    def __init__(self, ctes: set[str] | None = None) -> None:
        super().__init__()
        self.found: list[str] = []
        self.ctes = ctes or set()

    def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:
        if len(node.funcname) < 2:
            self.found.append("function " + ".".join(n.sval for n in node.funcname))

    def visit_TypeName(self, ancestors: Any, node: ast.TypeName) -> None:
        if len(node.names) < 2:
            self.found.append("type " + ".".join(n.sval for n in node.names))

    def visit_A_Expr(self, ancestors: Any, node: ast.A_Expr) -> None:
        kinds = (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL)
        if node.kind in kinds and len(node.name) < 2:
            self.found.append("operator " + ".".join(n.sval for n in node.name))

    def visit_SubLink(self, ancestors: Any, node: ast.SubLink) -> None:
        kinds = (SubLinkType.ANY_SUBLINK, SubLinkType.ALL_SUBLINK)
        if node.subLinkType in kinds and len(node.operName or ()) < 2:  # IN: a bare =
            self.found.append("operator of " + ("IN" if not node.operName else "ANY/ALL"))

    def visit_RangeVar(self, ancestors: Any, node: ast.RangeVar) -> None:
        if node.schemaname is None and node.relname not in self.ctes:
            self.found.append("relation " + node.relname)


STATEMENTS = sorted(queries().items())


@pytest.mark.parametrize(("name", "sql"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_every_name_in_an_engine_statement_is_schema_qualified(name: str, sql: str) -> None:
    statements = parse_sql(sql)
    ctes = _Ctes()
    for statement in statements:
        ctes(statement)
    visitor = _Unqualified(ctes.names)
    for statement in statements:
        visitor(statement)
    assert visitor.found == [], f"{name} leaves these to the search_path: {visitor.found}"


def test_the_checker_finds_what_the_attack_used() -> None:
    visitor = _Unqualified()
    sql = "SELECT df.f($1::jsonb), now() + x FROM t WHERE a = ANY ($2) AND b IN (SELECT 1)"
    for statement in parse_sql(sql):
        visitor(statement)
    assert sorted(visitor.found) == sorted(
        ["function now", "type jsonb", "operator +", "relation t", "operator =", "operator of IN"]
    )


def test_the_bookkeeping_on_step_sessions_is_named_queries() -> None:
    """The statements a step session runs for the engine are all checked above."""
    assert set(BOOKKEEPING) <= set(queries())
