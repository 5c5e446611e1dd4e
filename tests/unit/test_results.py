"""The result document written row by row: the same text as pg_durable's, its size exact,
refused as soon as it would pass the limit."""

from __future__ import annotations

import json

import pytest

from engine.errors import ResultTooLarge
from engine.executors.results import RowsDocument, rows_document

COLUMNS = [("a", "int4"), ("b", "text"), ("é", "jsonb")]
ROWS = [(1, "x", '{"k": [1, 2]}'), (None, 'ü\n"', None)] * 600


def test_same_text_as_one_json_dump() -> None:
    expected = json.dumps(
        {
            "rows": [
                {"a": a, "b": b, "é": None if c is None else json.loads(c)} for a, b, c in ROWS
            ],
            "row_count": len(ROWS),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert rows_document(COLUMNS, ROWS) == expected
    assert rows_document(COLUMNS, []) == '{"rows":[],"row_count":0}'


@pytest.mark.parametrize("count", [0, 1, 2, 9, 10, 11, 99, 100, 1200])
def test_the_limit_is_exact_in_utf8_bytes(count: int) -> None:
    text = rows_document(COLUMNS, ROWS[:count])
    size = len(text.encode())
    fits = RowsDocument(COLUMNS, size)
    fits.add(ROWS[:count])
    assert fits.size == size and fits.text() == text
    if count:
        with pytest.raises(
            ResultTooLarge, match=rf"limit of {size - 1} bytes \(--max-result-bytes\)"
        ):
            RowsDocument(COLUMNS, size - 1).add(ROWS[:count])


def test_a_huge_value_is_refused_before_it_is_converted() -> None:
    document = RowsDocument([("j", "jsonb")], 1000)
    with pytest.raises(ResultTooLarge):
        document.add([("[" + "1, " * 1000 + "1]",)])  # json.loads never sees it
