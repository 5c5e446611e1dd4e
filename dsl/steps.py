"""Find the constant SQL steps inside `df.start(...)` and check their syntax with pglast.

pg_durable reports a broken step only when the workflow runs it; pgdurable reports it when
df.start is called, as SQLSTATE 42601 with a position inside the user's own statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pglast import parser

from dsl.tree import df_function_name, nodes_of

# For each builder: which positional arguments are workflow steps (auto-wrapped SQL).
STEP_ARGUMENTS = {
    "sql": (0,),
    "seq": (0, 1),
    "join": (0, 1),
    "race": (0, 1),
    "join3": (0, 1, 2),
    "if": (0, 1, 2),
    "if_rows": (1, 2),
    "loop": (0, 1),
    "as": (0,),
    "retry": (0,),
    "timeout": (0,),
    "with_undo": (0, 1),
}
# Operator -> which operands are steps (|=> names its left operand; ?> and !> keep both).
STEP_OPERANDS = {
    "~>": (0, 1),
    "&": (0, 1),
    "|": (0, 1),
    "?>": (0, 1),
    "!>": (0, 1),
    "|=>": (0,),
    "@>": (1,),
    "<->": (0, 1),
}


@dataclass(frozen=True, slots=True)
class StepSyntaxError:
    """A SQL step that does not parse, located in the enclosing statement."""

    message: str
    position: int  # 1-based character position in the statement text, as PostgreSQL reports
    step: str


@dataclass(frozen=True, slots=True)
class StepConstant:
    """A string constant that becomes a SQL step, with its byte location."""

    value: str
    location: int


def start_steps(statement: dict[str, Any]) -> Iterator[StepConstant]:
    """The constant SQL steps of every df.start(...) call in one parsed statement."""
    for fut in start_futs(statement):
        yield from steps_of(fut)


def start_futs(statement: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Durofut expression (`fut`) of every df.start(...) call in one parsed statement."""
    for call in _calls(statement, "start"):
        args = call.get("args", [])
        fut = next(
            (
                a["NamedArgExpr"]["arg"]
                for a in args
                if "NamedArgExpr" in a and a["NamedArgExpr"].get("name") == "fut"
            ),
            None,
        )
        if fut is None and args and "NamedArgExpr" not in args[0]:
            fut = args[0]
        if isinstance(fut, dict):
            yield fut


def steps_of(root: dict[str, Any]) -> Iterator[StepConstant]:
    """The step constants of a Durofut expression, left to right, at any depth."""
    stack = [root]
    while stack:
        expr = stack.pop()
        if not isinstance(expr, dict):
            continue
        if "A_Const" in expr:
            step = _step_constant(expr["A_Const"])
            if step is not None:
                yield step
        else:
            stack.extend(reversed(step_operands(expr)))


def _step_constant(const: dict[str, Any]) -> StepConstant | None:
    sval = const.get("sval")
    if not isinstance(sval, dict):
        return None
    value = str(sval.get("sval", ""))
    if value.lstrip().startswith("{"):  # a Durofut JSON text, not SQL
        return None
    return StepConstant(value, int(const.get("location", -1)))


def step_operands(expr: dict[str, Any]) -> list[Any]:
    """The sub-expressions of `expr` that are themselves steps (or hold steps)."""
    if "TypeCast" in expr:
        return [expr["TypeCast"].get("arg")]
    if "A_Expr" in expr and expr["A_Expr"].get("kind") == "AEXPR_OP":
        node = expr["A_Expr"]
        operands = [node.get("lexpr"), node.get("rexpr")]
        return [operands[i] for i in STEP_OPERANDS.get(operator_name(node), ())]
    if "FuncCall" in expr:
        name = df_function_name(expr["FuncCall"])
        args = expr["FuncCall"].get("args", [])
        indexes = STEP_ARGUMENTS.get(name or "", ())
        return [args[i] for i in indexes if i < len(args) and "NamedArgExpr" not in args[i]]
    return []


def operator_name(node: dict[str, Any]) -> str:
    """An operator's name (`~>`), or "" for a schema-qualified or missing one."""
    names = node.get("name") or []
    if len(names) != 1 or not isinstance(names[0], dict) or "String" not in names[0]:
        return ""
    return str(names[0]["String"].get("sval", ""))


# Execution-time references: `{var}` is raw text (it may be a table name), `$name` a value.
_BRACED = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_NAMED = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*(?!\$)(\.\*|\.[A-Za-z_][A-Za-z0-9_]*\??|\?)?")


def check_step(step: StepConstant, statement_sql: str, sql_bytes: bytes) -> StepSyntaxError | None:
    """A positioned error when the step's SQL does not parse, else None."""
    if _BRACED.search(step.value) or _NAMED.search(step.value):
        return None  # completed only at run time (a {var} may even be a table name)
    try:
        parser.parse_sql_json(step.value)
        return None
    except parser.ParseError as exc:
        message = str(exc.args[0])
        offset = exc.args[1] if len(exc.args) > 1 and exc.args[1] is not None else len(step.value)
    if step.location < 0:
        return StepSyntaxError(message, 1, step.value)
    start = len(sql_bytes[: step.location].decode("utf-8", "replace"))
    return StepSyntaxError(message, _position(statement_sql, start, int(offset)), step.value)


def step_position(step: StepConstant, statement_sql: str, sql_bytes: bytes, offset: int) -> int:
    """1-based position in the statement of character `offset` of a step's text."""
    if step.location < 0:
        return 1
    start = len(sql_bytes[: step.location].decode("utf-8", "replace"))
    return _position(statement_sql, start, offset)


def _position(sql: str, literal_start: int, offset: int) -> int:
    """1-based position of character `offset` of a literal's value within `sql`."""
    if sql.startswith("$", literal_start):
        tag_end = sql.index("$", literal_start + 1) + 1
        return tag_end + offset + 1
    if not sql.startswith("'", literal_start):
        return literal_start + 1  # E'', U&'' and the like: point at the literal
    raw = literal_start + 1
    for _ in range(offset):
        raw += 2 if sql.startswith("''", raw) else 1
    return raw + 1


def _calls(tree: Any, function: str) -> Iterator[dict[str, Any]]:
    return (c for c in nodes_of(tree, "FuncCall") if df_function_name(c) == function)


def param_numbers(tree: Any) -> list[int]:
    """The $n parameters a statement references, sorted."""
    return sorted({int(ref["number"]) for ref in nodes_of(tree, "ParamRef") if "number" in ref})


@dataclass(frozen=True, slots=True)
class LiteralPosition:
    """Where a literal argument of a df.* call sits in the statement, for error positions."""

    message_prefix: str  # the server's error for this literal starts with this text
    position: int  # 1-based character position of the literal


def cron_positions(statement: dict[str, Any], sql_bytes: bytes) -> Iterator[LiteralPosition]:
    """The cron literals of df.wait_for_schedule(...) calls: their errors get a position."""
    for call in _calls(statement, "wait_for_schedule"):
        args = call.get("args", [])
        if not args or "A_Const" not in args[0] or "sval" not in args[0]["A_Const"]:
            continue
        const = args[0]["A_Const"]
        start = len(sql_bytes[: const.get("location", 0)].decode("utf-8", "replace"))
        prefix = f"Invalid cron expression '{const['sval'].get('sval', '')}'"
        yield LiteralPosition(prefix, start + 1)
