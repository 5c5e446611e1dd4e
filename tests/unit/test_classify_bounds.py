"""The classifier's bounds: any depth is classified, big texts are judged from the text."""

from __future__ import annotations

import json

import pytest
from pglast import parser

from dsl import StatementKind, classify
from dsl.classify import MAX_EXACT_SQL_CHARS
from dsl.deepjson import loads


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT df.start('SELECT 1' ~> 'SELECT 2', label => 'x'), 1.5e3, -2, E'\\u00e9\"q\"'",
        "SELECT 1; CREATE EXTENSION pg_durable",
        "SELECT '{\"a\": [1, {}, true, null]}'::jsonb",
    ],
)
def test_iterative_decoder_equals_json_loads(sql: str) -> None:
    text = parser.parse_sql_json(sql)
    assert loads(text) == json.loads(text)


@pytest.mark.parametrize("bad", ["[", "]", "[1]]", '{"a":1', "", "[1] 2"])
def test_iterative_decoder_refuses_broken_json(bad: str) -> None:
    with pytest.raises(ValueError):
        loads(bad)


def test_a_deep_df_start_is_classified_exactly() -> None:
    sql = "SELECT df.start(" + " ~> ".join(["'SELECT 1'"] * 1200) + " ~> 'SELEC 2')"
    verdict = classify(sql)
    assert "start" in verdict.df_functions
    assert verdict.step_error is not None and verdict.step_error.step == "SELEC 2"


def test_a_big_tree_is_judged_from_the_text() -> None:
    dense = ", ".join(["1"] * 30_000)  # a tree of more than 1 MiB of JSON
    verdict = classify(f'SELECT df.Start(\'SELEC 1\'), "df"."Status"(1), x.df.y(), {dense}')
    assert verdict.kind is StatementKind.WORKFLOW
    assert verdict.df_functions == {"start", "Status"}
    assert verdict.rewritten is None and verdict.step_error is None
    assert classify(f"SELECT df_x({dense})").kind is StatementKind.PASSTHROUGH


def test_a_big_text_only_says_whether_it_may_start_a_workflow() -> None:
    padding = "-- " + "x" * MAX_EXACT_SQL_CHARS + "\n"
    verdict = classify(padding + "SELECT df.START('SELEC 1')")
    assert "start" in verdict.df_functions
    assert verdict.rewritten is None and verdict.step_error is None
    assert classify(padding + "SELECT df.status('x')").kind is StatementKind.PASSTHROUGH
