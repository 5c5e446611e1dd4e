"""Execution-time substitution of `{var}` and `$name` references into step text (§6.3)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import EngineError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"\{([^{}]*)\}")
ROWSET_LIMIT = 10_000


class SubstitutionError(EngineError):
    """A strict reference could not be resolved; the node fails with this message."""

    sqlstate = "22023"  # invalid_parameter_value


def substitute_vars(
    text: str, variables: Mapping[str, str], instance_id: str, label: str | None
) -> str:
    """Replace `{name}` with snapshot variables (one left-to-right pass, raw text)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "sys_instance_id":
            return instance_id
        if name == "sys_label":
            return label or ""
        if _IDENT.fullmatch(name) and name in variables:
            return variables[name]
        return match.group(0)

    return _BRACED.sub(replace, text)


def substitute_results(text: str, results: Mapping[str, str], raw: bool = False) -> str:
    """Replace `$name`, `$name?`, `$name.col[?]` and `$name.*` with SQL renderings, or
    with raw text (`raw`: HTTP url, body, header values and multipart fields)."""
    if "$" not in text or not results:
        return text
    names = sorted(results, key=len, reverse=True)
    pattern = re.compile(
        r"\$(" + "|".join(re.escape(n) for n in names) + r")"
        r"(\.\*|\.[A-Za-z_][A-Za-z0-9_]*\??|\?)?(?![A-Za-z0-9_])"
    )

    def replace(match: re.Match[str]) -> str:
        name, suffix = match.group(1), match.group(2) or ""
        result = json.loads(results[name])
        if raw:
            return _render_raw(name, suffix, result)
        return _render_reference(name, suffix, result, match.group(0))

    return pattern.sub(replace, text)


def _render_reference(name: str, suffix: str, result: Any, literal: str) -> str:
    rows = result.get("rows") if isinstance(result, dict) else None
    if suffix == ".*":
        return _rowset(name, rows if isinstance(rows, list) else [result])
    if suffix.startswith("."):
        return _field(name, suffix[1:], result, rows, literal)
    nullable = suffix == "?"
    if not isinstance(rows, list):
        return sql_literal(json.dumps(result, separators=(",", ":"), ensure_ascii=False))
    if not rows:
        if nullable:
            return "NULL"
        raise SubstitutionError(f"${name} has no rows — query returned zero results")
    first = next(iter(rows[0].values()), None) if rows[0] else None
    if first is None:
        if nullable:
            return "NULL"
        raise SubstitutionError(f"${name} is NULL — first column of first row is NULL")
    return sql_value(first)


def _field(name: str, spec: str, result: Any, rows: Any, literal: str) -> str:
    nullable = spec.endswith("?")
    column = spec.rstrip("?")
    if isinstance(rows, list):
        source = rows[0] if rows else {}
    elif isinstance(result, dict):
        source = result
    else:
        raise SubstitutionError(f"${name}.{column}: result is neither a row set nor a JSON object")
    if column not in source:
        if not rows and isinstance(rows, list) and nullable:
            return "NULL"
        return literal  # PostgreSQL then reports the unknown reference itself
    value = source[column]
    if value is None:
        if nullable:
            return "NULL"
        raise SubstitutionError(f"${name}.{column} is NULL")
    return sql_value(value)


def _check_rowset_size(name: str, rows: list[Any]) -> None:
    if len(rows) > ROWSET_LIMIT:
        raise SubstitutionError(
            f"${name}.* — result has {len(rows)} rows, exceeding the maximum of {ROWSET_LIMIT} "
            "for row-set expansion. Use pagination or intermediate tables for large result sets."
        )


def _rowset(name: str, rows: list[Any]) -> str:
    _check_rowset_size(name, rows)
    alias = _identifier(name)
    if not rows or not isinstance(rows[0], dict):
        return f"(SELECT NULL WHERE false) AS {alias}"
    columns = list(rows[0])
    values = ", ".join(
        "(" + ", ".join(_rowset_value(row.get(col)) for col in columns) + ")" for row in rows
    )
    header = ", ".join(_identifier(c) for c in columns)
    return f"(VALUES {values}) AS {alias}({header})"


def _rowset_value(value: Any) -> str:
    if isinstance(value, str):
        return sql_literal(value) + "::text"
    if isinstance(value, dict | list):
        return sql_literal(json.dumps(value, separators=(",", ":"), ensure_ascii=False)) + "::text"
    return sql_value(value)


def _render_raw(name: str, suffix: str, result: Any) -> str:
    """A reference as raw text: strings unquoted, other JSON as compact JSON text."""
    rows = result.get("rows") if isinstance(result, dict) else None
    if suffix == ".*":
        rowset = rows if isinstance(rows, list) else [result]
        _check_rowset_size(name, rowset)
        return _compact(rowset)
    nullable = suffix.endswith("?")
    if isinstance(rows, list) and not rows:
        if nullable:
            return "NULL"
        raise SubstitutionError(f"${name} has no rows — query returned zero results")
    if suffix.startswith("."):
        column = suffix[1:].rstrip("?")
        value, what = _raw_field(name, column, result, rows), f"${name}.{column}"
    elif isinstance(rows, list):
        value = next(iter(rows[0].values()), None) if rows[0] else None
        what = f"${name} is NULL — first column of first row"
    else:
        return raw_value(result)  # a result without rows is used whole
    if value is None:
        if nullable:
            return "NULL"
        raise SubstitutionError(f"{what} is NULL")
    return raw_value(value)


def _raw_field(name: str, column: str, result: Any, rows: Any) -> Any:
    """Field `column` of the first row, or of a JSON object result; missing fails."""
    if isinstance(rows, list):
        source = rows[0]
    elif isinstance(result, dict):
        source = result
    else:
        raise SubstitutionError(f"${name}.{column}: result is neither a row set nor a JSON object")
    if column not in source:
        available = ", ".join(source)
        raise SubstitutionError(
            f"${name}.{column}: result has no field '{column}' (available: {available})"
        )
    return source[column]


def raw_value(value: Any) -> str:
    """A JSON value as raw text (HTTP context)."""
    if isinstance(value, str):
        return value
    return _compact(value)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sql_value(value: Any) -> str:
    """A JSON value rendered for SQL text."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return sql_literal(value)
    return sql_literal(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def sql_literal(text: str) -> str:
    """A single-quoted SQL literal (standard_conforming_strings). A value with a `$` in it
    is spelt as an escape string with `$` as `\\x24`: the step may put the reference inside a
    dollar-quoted body (a DO block, a function), whose end a `$$` in the value would be."""
    if "$" not in text:
        return "'" + text.replace("'", "''") + "'"
    escaped = text.replace("\\", "\\\\").replace("'", "''").replace("$", "\\x24")
    return "E'" + escaped + "'"


def _identifier(name: str) -> str:
    """A quoted identifier; one with a `$` is spelt with a Unicode escape (see sql_literal)."""
    if "$" not in name:
        return '"' + name.replace('"', '""') + '"'
    escaped = name.replace("\\", "\\\\").replace('"', '""').replace("$", "\\0024")
    return 'U&"' + escaped + '"'
