"""dsl.classify as a table: statement → verdict, rewrite and error position, kept as a SQL
fixture file (tests/unit/dsl_cases/classify.sql) the way pglast keeps its cases."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsl.classify import Classification, classify

CASES = Path(__file__).parent / "dsl_cases" / "classify.sql"
_KEY = re.compile(r"(\w+)=")


@dataclass(frozen=True)
class Case:
    name: str
    expect: dict[str, str]
    sql: str


def _expectations(lines: list[str]) -> dict[str, str]:
    """`key=value` pairs; a value runs to the next ` key=` (values may hold spaces)."""
    expect: dict[str, str] = {}
    for line in lines:
        text = line.removeprefix("-- expect:").strip()
        keys = list(_KEY.finditer(text))
        for match, following in zip(keys, [*keys[1:], None], strict=True):
            end = following.start() if following is not None else len(text)
            if following is not None and match.group(1) == "rewritten":
                end = len(text)  # a rewrite is code: it runs to the end of the line
            expect[match.group(1)] = text[match.end() : end].strip()
            if end == len(text):
                break
    return expect


def load_cases() -> list[Case]:
    cases = []
    for block in CASES.read_text().split("-- case: ")[1:]:
        lines = block.splitlines()
        expect = [line for line in lines[1:] if line.startswith("-- expect:")]
        sql = "\n".join(line for line in lines[1:] if not line.startswith("--")).strip()
        cases.append(Case(lines[0].strip(), _expectations(expect), sql))
    return cases


def _observed(verdict: Classification, keys: set[str]) -> dict[str, str]:
    seen = {
        "kind": verdict.kind.value,
        "functions": ",".join(sorted(verdict.df_functions)),
        "operators": "yes" if verdict.uses_dsl_operators else "no",
        "statements": str(verdict.statement_count),
        "step_error": verdict.step_error.message if verdict.step_error else "",
        "step_error_at": str(verdict.step_error.position) if verdict.step_error else "",
        "cron_at": ",".join(str(p.position) for p in verdict.literal_positions),
    }
    return {key: value for key, value in seen.items() if key in keys}


CASE_LIST = load_cases()


@pytest.mark.parametrize("case", CASE_LIST, ids=[c.name for c in CASE_LIST])
def test_classify(case: Case) -> None:
    verdict = classify(case.sql)
    expected = {k: v for k, v in case.expect.items() if k != "rewritten"}
    assert _observed(verdict, set(expected)) == expected
    if "rewritten" in case.expect:
        assert verdict.rewritten is not None
        assert verdict.rewritten.startswith(case.expect["rewritten"]), verdict.rewritten
    else:
        assert verdict.rewritten is None


def test_every_case_has_a_statement_and_a_kind() -> None:
    assert len(CASE_LIST) >= 15
    assert all(case.sql and "kind" in case.expect for case in CASE_LIST)
