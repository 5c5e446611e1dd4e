"""Turn a step's rows into pg_durable's result document, with its type mapping (§6.2)."""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from engine.errors import ResultTooLarge, UnsupportedColumn

SUPPORTED = (
    "bool, int2, int4, int8, float4, float8, text, varchar, numeric, uuid, timestamptz, "
    "timestamp, date, jsonb, json, void"
)


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


class RowsDocument:
    """pg_durable's `{"rows":[{col:val,...}],"row_count":n}` (compact JSON, columns in SELECT
    order), written as rows arrive and refused as soon as it would pass `limit` bytes.

    Each row is converted and serialised on arrival, so the rows themselves are not kept; a
    text or JSON value more than twice what is left of the limit is refused before it is
    converted (its compact JSON cannot be shorter than half of it)."""

    HEAD, TAIL = '{"rows":[', '],"row_count":'

    def __init__(self, columns: Sequence[tuple[str, str]], limit: int) -> None:
        self._names = [name for name, _ in columns]
        self._converters = [CONVERTERS[type_name] for _, type_name in columns]
        self._limit = limit
        self._parts: list[str] = []
        self.size = len(self.HEAD) + len(self.TAIL) + len("0}")  # the empty document
        self.rows = 0

    def add(self, rows: Iterable[Iterable[Any]]) -> None:
        """Append rows; ResultTooLarge once the document would pass the limit."""
        for row in rows:
            self._check_values(row)
            item: dict[str, Any] = {}
            for name, convert, value in zip(self._names, self._converters, row, strict=True):
                item[name] = None if value is None else convert(value)
            piece = compact(item)
            grown = (len(piece) if piece.isascii() else len(piece.encode())) + (self.rows > 0)
            grown += len(str(self.rows + 1)) - len(str(self.rows))  # the count's digits
            if self.size + grown > self._limit:
                raise ResultTooLarge(self._limit)
            self.size += grown
            self._parts.append(piece)
            self.rows += 1

    def _check_values(self, row: Iterable[Any]) -> None:
        left = self._limit - self.size
        for value in row:
            if isinstance(value, str) and len(value) > 2 * left:
                raise ResultTooLarge(self._limit)

    def rows_per_fetch(self, chunk_bytes: int) -> int:
        """How many more rows make about `chunk_bytes`, judging by the rows so far."""
        if self.rows == 0:
            return FIRST_FETCH_ROWS
        average = max(1, (self.size - len(self.HEAD)) // self.rows)
        return max(1, min(MAX_FETCH_ROWS, chunk_bytes // average))

    def text(self) -> str:
        document = self.HEAD + ",".join(self._parts) + self.TAIL + str(self.rows) + "}"
        self._parts = []
        return document


FIRST_FETCH_ROWS = 16  # rows asked for with the statement: most steps return one
MAX_FETCH_ROWS = 10_000


def rows_document(
    columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]], limit: int = 2**62
) -> str:
    """`{"rows":[{col:val,...}],"row_count":n}` as compact JSON, columns in SELECT order."""
    document = RowsDocument(columns, limit)
    document.add(rows)
    return document.text()


def compact(value: Any) -> str:
    """Compact JSON with non-ASCII kept raw (serde_json's output)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
