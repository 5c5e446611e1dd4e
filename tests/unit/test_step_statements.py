"""dsl.statements: a step's text split before its last statement by PostgreSQL's parser."""

from __future__ import annotations

import pytest

from dsl.statements import SplitStep, split_step


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", None),
        ("SELECT ';' AS semicolon;  -- one statement", None),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", None),
        ("SELEC 1; SELECT 2", None),  # PostgreSQL reports the error when it runs
        (
            "SELECT 'é;'; SELECT 'ü' AS x;  -- end",
            SplitStep("SELECT 'é;'; ", "SELECT 'ü' AS x", False),
        ),
        (
            "SAVEPOINT a; ROLLBACK WORK TO SAVEPOINT a; PREPARE p AS SELECT 1; EXECUTE p",
            SplitStep(
                "SAVEPOINT a; ROLLBACK WORK TO SAVEPOINT a; PREPARE p AS SELECT 1; ",
                "EXECUTE p",
                False,
            ),
        ),
        ("/* c */ end; SELECT 1", SplitStep("/* c */ end; ", "SELECT 1", True)),
        (
            "SELECT 1; PREPARE TRANSACTION 'x'",
            SplitStep("SELECT 1; ", "PREPARE TRANSACTION 'x'", True),
        ),
    ],
)
def test_split_step(sql: str, expected: SplitStep | None) -> None:
    assert split_step(sql) == expected
