"""Named-result references (`$name`, `$name.col`, `$name.*`) in df.start's SQL steps that
no step of the workflow defines.

At run time a reference to a name no step stored is left as written, so the step fails
with `syntax error at or near "$"`, long after df.start. pgdurable refuses such a workflow
at df.start, as it does a step that does not parse, and only where that failure is
certain:

* every result name of the workflow is known: the Durofut expression is made of constant
  steps, df builders and the DSL operators, and names are constants (anything else, such
  as a parameter, a column, a subquery, another function or a Durofut JSON text, might
  bring more names, and the check is skipped);
* the reference is in the step's SQL code, not in a literal, quoted identifier or comment
  (`format('%1$s', x)` and jsonpath variables `'$ ? (@ > $min)'` are not references to
  anything unless a step has that name), and the step has no `{var}`, whose text could
  change that;
* it is not optional: `$name?` and `$name.col?` stay legal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pglast import parser

from dsl.steps import (
    STEP_ARGUMENTS,
    STEP_OPERANDS,
    StepConstant,
    StepSyntaxError,
    operator_name,
    step_position,
    steps_of,
)
from dsl.tree import df_function_name

# df builders none of whose arguments is a step (so none names a result)
LEAF_BUILDERS = frozenset(
    {"sleep", "break", "wait_for_schedule", "wait_for_signal", "http", "http_multipart"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COLUMN = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_ANY_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")  # anything that might be a reference
# Longer steps are not scanned: PostgreSQL's scanner costs about 1.5 µs a character here.
MAX_STEP_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reference:
    """A strict reference in a step's SQL code: its name and the character offset of '$'."""

    name: str
    offset: int


def unknown_reference(
    fut: dict[str, Any], statement_sql: str, sql_bytes: bytes
) -> StepSyntaxError | None:
    """The first strict reference of a df.start step to a result name no step of `fut`
    defines, located in the statement; None when there is none, or it cannot be known."""
    names = defined_names(fut)
    if names is None:
        return None
    for step in steps_of(fut):
        if len(step.value) > MAX_STEP_CHARS or set(_ANY_NAME.findall(step.value)) <= names:
            continue  # nothing to scan for (the relay scans on its event loop)
        for reference in strict_references(step.value):
            if reference.name not in names:
                return _refused(step, reference, statement_sql, sql_bytes)
    return None


def _refused(
    step: StepConstant, reference: Reference, statement_sql: str, sql_bytes: bytes
) -> StepSyntaxError:
    message = (
        f'unknown named result "${reference.name}": no step of this workflow is named'
        f" \"{reference.name}\" (name one with |=> '{reference.name}', or write"
        f" ${reference.name}? where it may be missing)"
    )
    position = step_position(step, statement_sql, sql_bytes, reference.offset)
    return StepSyntaxError(message, position, step.value)


def defined_names(fut: dict[str, Any]) -> frozenset[str] | None:
    """Every result name the Durofut expression `fut` gives a step, or None when that
    cannot be known from the statement."""
    names: set[str] = set()
    stack = [fut]
    while stack:
        expr = stack.pop()
        if not isinstance(expr, dict):
            return None
        if "A_Const" in expr:
            value = _string(expr)
            if value is not None and value.lstrip().startswith("{"):
                return None  # a Durofut JSON text: its names are not read here
        elif "TypeCast" in expr:
            stack.append(expr["TypeCast"].get("arg"))
        elif "A_Expr" in expr:
            if not _operands(expr["A_Expr"], names, stack):
                return None
        elif "FuncCall" in expr:
            if not _arguments(expr["FuncCall"], names, stack):
                return None
        else:
            return None
    return frozenset(names)


def _operands(node: dict[str, Any], names: set[str], stack: list[Any]) -> bool:
    """Push a DSL operator's step operands and take its name (|=>); False: not one."""
    operator = operator_name(node)
    if node.get("kind") != "AEXPR_OP" or operator not in STEP_OPERANDS:
        return False
    if operator == "|=>":
        name = _string(node.get("rexpr"))
        if name is None:
            return False
        names.add(name)
        stack.append(node.get("lexpr"))
        return True
    stack.extend(node.get(side) for side in ("lexpr", "rexpr") if node.get(side) is not None)
    return True


def _arguments(call: dict[str, Any], names: set[str], stack: list[Any]) -> bool:
    """Push a df builder's step arguments and take its name (df.as); False: not one."""
    function = df_function_name(call) or ""
    if function in LEAF_BUILDERS:
        return True
    args = call.get("args", [])
    if function not in STEP_ARGUMENTS or any("NamedArgExpr" in a for a in args):
        return False
    if function == "as":
        name = _string(args[1]) if len(args) > 1 else None
        if name is None:
            return False
        names.add(name)
    stack.extend(args[i] for i in STEP_ARGUMENTS[function] if i < len(args))
    return True


def _string(expr: Any) -> str | None:
    """The value of a string constant (perhaps cast), else None."""
    while isinstance(expr, dict) and "TypeCast" in expr:
        expr = expr["TypeCast"].get("arg")
    if not isinstance(expr, dict) or "A_Const" not in expr:
        return None
    sval = expr["A_Const"].get("sval")
    return str(sval.get("sval", "")) if isinstance(sval, dict) else None


def strict_references(step: str) -> Iterator[Reference]:
    """The strict `$name`, `$name.col` and `$name.*` references in a step's SQL code."""
    if "$" not in step or _BRACED.search(step):
        return
    try:
        tokens = parser.scan(step)
    except parser.ParseError:
        return
    for dollar, word in pairwise(tokens):
        # PostgreSQL's scanner reads `$nope` as the character '$' and then a word (pglast
        # gives character offsets)
        if dollar.name != "ASCII_36" or word.start != dollar.end + 1:
            continue
        name = _NAME.match(step, word.start)
        if name is None:
            continue
        after = name.end()
        column = _COLUMN.match(step, after)
        if step.startswith("?", column.end() if column else after):
            continue  # $name? or $name.col?: optional
        yield Reference(name.group(), dollar.start)
