"""Decide whether a statement is pgdurable's business: calls into `df.*` or CREATE EXTENSION.

Only statements that pass the relay's byte pre-filter get here, and the relay caches the
verdict by exact SQL text, so this runs once per distinct candidate statement. It uses
libpg_query's JSON output (≈ 15 µs for 200 characters) rather than pglast's Python AST
(≈ 100–250 µs), since a verdict needs only a walk over plain dicts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pglast import parser

from dsl import deepjson
from dsl.references import unknown_reference
from dsl.steps import (
    LiteralPosition,
    StepSyntaxError,
    check_step,
    cron_positions,
    param_numbers,
    start_futs,
    steps_of,
)
from dsl.tree import df_function_name, nodes_of

DSL_OPERATORS = frozenset({"~>", "|=>", "?>", "!>", "@>", "&", "|", "<->"})
EXTENSION_NAME = "pg_durable"
# The relay classifies on its event loop, and the densest statements cost ~6 µs a byte to
# parse, decode and walk (`SELECT df.version(), 1,1,…` of 2 MB: 12 s, every session
# stalled). Past these sizes the verdict comes from the text alone (`_from_text`).
MAX_EXACT_SQL_CHARS = 256 * 1024
MAX_TREE_JSON_CHARS = 1024 * 1024
MAX_DEEP_TREE_JSON_CHARS = 512 * 1024  # the iterative decoder is ~5x slower than json's
# df.<name>( in the text, quoted or not: what the text-only verdict looks for.
_DF_CALL = re.compile(
    r'(?<![\w.$"])(?:df|"df")\s*\.\s*("?)([A-Za-z_][A-Za-z0-9_$]*)\1\s*\(', re.IGNORECASE
)


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
    rewritten: str | None = None  # the SQL the server should run instead, if any
    step_error: StepSyntaxError | None = None  # a df.start step that does not parse
    # server errors that start with these texts get these positions (cron literals, ...)
    literal_positions: tuple[LiteralPosition, ...] = ()


def classify(sql: str) -> Classification:
    """Classify one Query/Parse text (which may hold several statements)."""
    if len(sql) > MAX_EXACT_SQL_CHARS:
        return _from_big_text(sql)
    try:
        text = parser.parse_sql_json(sql)
    except parser.ParseError:
        return Classification(StatementKind.UNPARSABLE)
    if len(text) > MAX_TREE_JSON_CHARS:
        return _from_text(sql)
    try:
        tree = _decode_tree(text)
    except _TooDeep:
        return _from_text(sql)
    raw_statements = tree.get("stmts", [])
    statements = [raw["stmt"] for raw in raw_statements]
    if any(_is_create_extension(stmt) for stmt in statements):
        return Classification(
            StatementKind.CREATE_EXTENSION,
            statement_count=len(statements),
            rewritten=_without_create_extension(sql, raw_statements),
        )
    functions: set[str] = set()
    uses_operators = False
    for call in nodes_of(statements, "FuncCall"):
        name = df_function_name(call)
        if name is None:
            continue
        functions.add(name)
        uses_operators = uses_operators or any(
            _operator_name(expr) in DSL_OPERATORS
            for expr in nodes_of(call.get("args", []), "A_Expr")
        )
    if not functions:
        return Classification(StatementKind.PASSTHROUGH, statement_count=len(statements))
    error, rewritten = (None, None)
    if "start" in functions:
        error, rewritten = _first_step_error(sql, raw_statements)
    positions: tuple[LiteralPosition, ...] = ()
    if "wait_for_schedule" in functions:
        data = sql.encode()
        positions = tuple(p for raw in raw_statements for p in cron_positions(raw["stmt"], data))
    return Classification(
        StatementKind.WORKFLOW,
        frozenset(functions),
        uses_operators,
        len(statements),
        rewritten=rewritten,
        step_error=error,
        literal_positions=positions,
    )


def _from_text(sql: str) -> Classification:
    """A verdict without parsing, for trees too big to decode on the event loop.

    It names the df functions the text seems to call (in literals and comments too: a
    spurious `start` costs a wake-up and a notice tap, nothing more). It rewrites nothing:
    no early step syntax check, no cron positions, and a CREATE EXTENSION pg_durable in
    such a text reaches the server as written.
    """
    functions = frozenset(name if quote else name.lower() for quote, name in _DF_CALL.findall(sql))
    if not functions:
        return Classification(StatementKind.PASSTHROUGH)
    uses_operators = any(op in sql for op in DSL_OPERATORS)
    return Classification(StatementKind.WORKFLOW, functions, uses_operators)


def _from_big_text(sql: str) -> Classification:
    """Like `_from_text` for texts over MAX_EXACT_SQL_CHARS, where even a regular expression
    costs up to a second on adversarial text: any `start` counts as a call of df.start."""
    if "start" not in sql.lower():
        return Classification(StatementKind.PASSTHROUGH)
    return Classification(StatementKind.WORKFLOW, frozenset({"start"}))


class _TooDeep(Exception):
    """A tree too deep for json.loads and too big for the iterative decoder's budget."""


def _decode_tree(text: str) -> dict[str, Any]:
    """libpg_query's parse tree as dicts; trees deeper than `json.loads` goes decode too."""
    try:
        tree: dict[str, Any] = json.loads(text)
    except RecursionError:  # json.loads is bounded by the recursion limit, deepjson is not
        if len(text) > MAX_DEEP_TREE_JSON_CHARS:
            raise _TooDeep from None
        tree = deepjson.loads(text)
    return tree


def _first_step_error(
    sql: str, raw_statements: list[dict[str, Any]]
) -> tuple[StepSyntaxError | None, str | None]:
    """The first broken SQL step (one that does not parse, or that names a result no step
    defines), and `sql` with its statement turned into a raise."""
    data = sql.encode()
    for raw in raw_statements:
        for fut in start_futs(raw["stmt"]):
            errors = (check_step(step, sql, data) for step in steps_of(fut))
            error = next((e for e in errors if e is not None), None)
            if error is None:
                error = unknown_reference(fut, sql, data)
            if error is None:
                continue
            start = raw.get("stmt_location", 0)
            end = start + raw["stmt_len"] if raw.get("stmt_len") else len(data)
            params = "".join(f", ${n}::text" for n in param_numbers(raw["stmt"]))
            raise_sql = (
                f"{' ' if start else ''}SELECT df._step_syntax_error({_literal(error.message)}, "
                f"{error.position}, {_literal(error.step)}{params})"
            )
            return error, (data[:start] + raise_sql.encode() + data[end:]).decode()
    return None, None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# What `CREATE EXTENSION [IF NOT EXISTS] pg_durable` becomes: the catalog is installed by
# pgdurable itself, so the statement only checks that it is there. It ends by raising the
# notice EXTENSION_MARKER (whatever the session's client_min_messages), which the relay
# takes out of the stream as it gives the DO's CommandComplete the tag CREATE EXTENSION.
EXTENSION_MARKER = "pgdurable:create-extension"
EXTENSION_TAG = "CREATE EXTENSION"
EXTENSION_NOOP = (
    "DO $pgdurable$DECLARE level text := current_setting('client_min_messages'); BEGIN "
    "IF to_regclass('df._migrations') IS NULL THEN RAISE EXCEPTION "
    "'pg_durable background worker not yet initialized — try again in a moment' "
    "USING ERRCODE = '55000'; END IF; "
    "PERFORM set_config('client_min_messages', 'notice', true); "
    f"RAISE NOTICE '{EXTENSION_MARKER}'; "
    "PERFORM set_config('client_min_messages', level, true); END$pgdurable$"
)


def _without_create_extension(sql: str, raw_statements: list[dict[str, Any]]) -> str:
    """`sql` with each CREATE EXTENSION pg_durable statement replaced by the no-op."""
    data = sql.encode()
    pieces = []
    cursor = 0
    for raw in raw_statements:
        if not _is_create_extension(raw["stmt"]):
            continue
        start = raw.get("stmt_location", 0)
        end = start + raw["stmt_len"] if raw.get("stmt_len") else len(data)
        pieces += [data[cursor:start], b" " if start else b"", EXTENSION_NOOP.encode()]
        cursor = end
    pieces.append(data[cursor:])
    return b"".join(pieces).decode()


def _is_create_extension(stmt: dict[str, Any]) -> bool:
    node = stmt.get("CreateExtensionStmt")
    return node is not None and node.get("extname") == EXTENSION_NAME


def _operator_name(expr: dict[str, Any]) -> str | None:
    names = expr.get("name", [])
    if len(names) == 1 and "String" in names[0]:
        return str(names[0]["String"].get("sval", ""))
    return None
