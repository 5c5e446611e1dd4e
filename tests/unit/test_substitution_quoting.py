"""A substituted value never ends the dollar-quoted body its reference sits in."""

from __future__ import annotations

import json

import pytest
from pglast import ast, parse_sql

from engine.planner.substitute import substitute_results


def _result(**row: object) -> dict[str, str]:
    return {"t": json.dumps({"rows": [row], "row_count": 1})}


HOSTILE = ["x$$; DROP TABLE victims; --", "$q$ $$ $", "back\\slash $$ 'quote'"]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_dollar_dollar_in_a_value_does_not_end_a_do_block(value: str) -> None:
    step = "DO $$ BEGIN PERFORM $t.v; END $$"
    statements = parse_sql(substitute_results(step, _result(v=value)))
    assert len(statements) == 1
    assert isinstance(statements[0].stmt, ast.DoStmt)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_rowset_with_dollars_in_its_names_and_values_stays_one_statement(value: str) -> None:
    step = "DO $$ BEGIN PERFORM * FROM $t.*; END $$; SELECT 1"
    rows = {"t": json.dumps({"rows": [{value: value}], "row_count": 1})}
    statements = parse_sql(substitute_results(step, rows))
    assert len(statements) == 2


def test_a_value_without_a_dollar_is_quoted_as_pg_durable_quotes_it() -> None:
    assert substitute_results("SELECT $t.v", _result(v="it's")) == "SELECT 'it''s'"
