"""The catalog's files hold each object's one current definition (engine/sql/catalog)."""

from __future__ import annotations

from collections import Counter
from importlib import resources

import pytest
from pglast import ast, parse_sql
from pglast.enums import FunctionParameterMode
from pglast.stream import RawStream

from engine.catalog import CODE_FILES, LATE_STRUCTURE_FILES, STRUCTURE_FILES, catalog_sql

INSTALL_ORDER = STRUCTURE_FILES + CODE_FILES + LATE_STRUCTURE_FILES
_INPUTS = (
    FunctionParameterMode.FUNC_PARAM_IN,
    FunctionParameterMode.FUNC_PARAM_INOUT,
    FunctionParameterMode.FUNC_PARAM_VARIADIC,
    FunctionParameterMode.FUNC_PARAM_DEFAULT,
)


# Statements creating a relation or type: its kind, and the field naming it.
_RELATIONS = {
    ast.CreateStmt: ("table", "relation"),
    ast.ViewStmt: ("view", "view"),
    ast.CompositeTypeStmt: ("type", "typevar"),
}
# Statements creating an object of a table: its kind, the fields naming it and the table.
_ON_TABLES = {
    ast.CreatePolicyStmt: ("policy", "policy_name", "table"),
    ast.CreateTrigStmt: ("trigger", "trigname", "relation"),
    ast.IndexStmt: ("index", "idxname", "relation"),
}


def _name(parts: tuple[ast.String, ...]) -> str:
    return ".".join(p.sval for p in parts)


def _created(statement: ast.Node) -> str | None:
    """What a statement creates, as 'kind name', or None."""
    if isinstance(statement, ast.CreateFunctionStmt):
        inputs = [p for p in statement.parameters or () if p.mode in _INPUTS]
        types = ", ".join(RawStream()(p.argType) for p in inputs)
        return f"function {_name(statement.funcname)}({types})"
    if isinstance(statement, ast.DefineStmt):
        args = ", ".join(
            f"{d.defname}={RawStream()(d.arg)}"
            for d in statement.definition
            if d.defname.lower() in ("leftarg", "rightarg")
        )
        return f"operator {_name(statement.defnames)}({args})"
    for statement_type, (kind, relation_field) in _RELATIONS.items():
        if isinstance(statement, statement_type):
            relation = getattr(statement, relation_field)
            return f"{kind} {relation.schemaname}.{relation.relname}"
    for statement_type, (kind, name_field, table_field) in _ON_TABLES.items():
        if isinstance(statement, statement_type):
            table = getattr(statement, table_field).relname
            return f"{kind} {getattr(statement, name_field)} on {table}"
    return None


def _statements() -> list[tuple[str, ast.Node]]:
    return [(name, raw.stmt) for name in INSTALL_ORDER for raw in parse_sql(catalog_sql((name,)))]


def test_the_install_order_names_every_catalog_file_once() -> None:
    folder = resources.files("engine") / "sql" / "catalog"
    files = sorted(e.name.removesuffix(".sql") for e in folder.iterdir() if e.name.endswith(".sql"))
    assert sorted(INSTALL_ORDER) == files
    assert len(set(INSTALL_ORDER)) == len(INSTALL_ORDER)


def test_every_object_is_created_once() -> None:
    created = Counter(c for _, s in _statements() if (c := _created(s)) is not None)
    assert [c for c, n in created.items() if n > 1] == []
    assert sum(1 for c in created if c.startswith("function ")) > 100  # the parser saw them
    assert sum(1 for c in created if c.startswith("operator ")) == 7  # and <-> in a DO block


def test_settings_are_in_each_create_function_not_in_alter_function() -> None:
    """Planner, JIT and search_path settings are written where the function is defined."""
    altered = [s for _, s in _statements() if isinstance(s, ast.AlterFunctionStmt | ast.RenameStmt)]
    assert altered == []


def test_every_security_definer_function_pins_its_search_path() -> None:
    unpinned = []
    for _, statement in _statements():
        if not isinstance(statement, ast.CreateFunctionStmt):
            continue
        options = {o.defname: o.arg for o in statement.options or ()}
        definer = "security" in options and options["security"].boolval
        pinned = any(
            o.defname == "set" and o.arg.name == "search_path" for o in statement.options or ()
        )
        if definer and not pinned:
            unpinned.append(_created(statement))
    assert unpinned == []


@pytest.mark.parametrize("name", CODE_FILES)
def test_code_files_can_run_again_on_an_installed_catalog(name: str) -> None:
    """An upgrade re-runs the code files: they only CREATE OR REPLACE (and grant)."""
    for raw in parse_sql(catalog_sql((name,))):
        statement = raw.stmt
        if isinstance(statement, ast.CreateFunctionStmt | ast.ViewStmt | ast.CreateTrigStmt):
            assert statement.replace, _created(statement)
        else:
            assert isinstance(statement, ast.GrantStmt | ast.DoStmt), type(statement).__name__
