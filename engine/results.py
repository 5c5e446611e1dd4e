"""Turn a step's rows into pg_durable's result document, with its type mapping (§6.2)."""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

SUPPORTED = (
    "bool, int2, int4, int8, float4, float8, text, varchar, numeric, uuid, timestamptz, "
    "timestamp, date, jsonb, json, void"
)


class UnsupportedColumn(Exception):
    """A result column has a type pg_durable cannot represent."""


def _fraction(value: datetime.datetime) -> str:
    """Fractional seconds as chrono prints them: none, 3 or 6 digits."""
    micro = value.microsecond
    if micro == 0:
        return ""
    return f".{micro // 1000:03d}" if micro % 1000 == 0 else f".{micro:06d}"


def _timestamptz(value: datetime.datetime) -> str:
    utc = value.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(utc) + "+00:00"


def _timestamp(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(value)


def _float(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _numeric(value: decimal.Decimal) -> str:
    return "NaN" if value.is_nan() else format(value, "f")


def _same(value: Any) -> Any:
    return value


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bool": _same,
    "int2": _same,
    "int4": _same,
    "int8": _same,
    "float4": _float,
    "float8": _float,
    "text": _same,
    "varchar": _same,
    "bpchar": _same,
    "name": _same,
    "numeric": _numeric,
    "uuid": str,
    "timestamptz": _timestamptz,
    "timestamp": _timestamp,
    "date": lambda v: v.isoformat(),
    "json": json.loads,
    "jsonb": json.loads,
    "void": lambda v: None,
}


def type_label(type_name: str) -> str:
    """pg_durable's spelling of a type in its error message (INT4[], BYTEA, ...)."""
    return (type_name[1:] + "[]" if type_name.startswith("_") else type_name).upper()


def check_columns(columns: Sequence[tuple[str, str]]) -> None:
    """Raise UnsupportedColumn for the first column whose type cannot be converted."""
    for name, type_name in columns:
        if type_name not in CONVERTERS:
            raise UnsupportedColumn(
                f"Unsupported column type '{type_label(type_name)}' for column '{name}'. "
                f"Supported types: {SUPPORTED}."
            )


def rows_document(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> str:
    """`{"rows":[{col:val,...}],"row_count":n}` as compact JSON, columns in SELECT order."""
    converters = [CONVERTERS[type_name] for _, type_name in columns]
    names = [name for name, _ in columns]
    out = []
    for row in rows:
        item: dict[str, Any] = {}
        for name, convert, value in zip(names, converters, row, strict=True):
            item[name] = None if value is None else convert(value)
        out.append(item)
    return compact({"rows": out, "row_count": len(out)})


def compact(value: Any) -> str:
    """Compact JSON with non-ASCII kept raw (serde_json's output)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
