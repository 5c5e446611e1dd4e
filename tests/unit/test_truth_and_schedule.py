"""Conditions' truthiness and WAIT_SCHEDULE's next tick, as tables: no database."""

from __future__ import annotations

import datetime

import pytest

from engine.planner.schedule import next_tick
from engine.planner.truth import result_is_true

# A condition node's result text → whether IF takes its then-branch (pg_durable §6.5).
TRUTH = [
    ('{"rows": []}', False),  # no row
    ('{"rows": [{}]}', False),  # a row without columns
    ('{"rows": [{"a": 0}]}', False),
    ('{"rows": [{"a": 1, "b": 0}]}', True),  # the first column decides
    ('{"rows": [{"a": 0, "b": 1}]}', False),
    ('{"rows": [{"a": null}]}', False),
    ('{"rows": [{"a": "yes"}]}', True),
    ('{"rows": [{"a": "f"}]}', False),
    ('{"rows": [{"a": " 0.0 "}]}', False),  # a number in text, by value
    ('{"rows": [{"a": "1e3"}]}', True),
    ('{"rows": [{"a": ""}]}', False),
    ('{"rows": [{"a": []}]}', False),  # empty array / object
    ('{"rows": [{"a": {"k": 1}}]}', True),
    ('{"rows": [{"a": "anything"}]}', True),
    ("true", True),
    ("false", False),
    ("null", False),
    ("0", False),
    ("-0.5", True),
    ("[]", False),
    ("{}", False),
    ('{"status": 200}', True),  # an HTTP result: any non-empty object
    ('"NO"', False),
    ('"T"', True),
    ("not json at all", True),  # text: true unless it says false
    ("  ", False),
    ("No", False),
]


@pytest.mark.parametrize(("raw", "expected"), TRUTH)
def test_condition_truthiness(raw: str, expected: bool) -> None:
    assert result_is_true(raw) is expected


def _at(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


# (cron expression, now, next tick), UTC; 2026-11-29 is a Sunday.
TICKS = [
    ("* * * * *", "2026-11-29 12:00:30", "2026-11-29 12:01:00"),
    ("* * * * *", "2026-11-29 12:01:00", "2026-11-29 12:02:00"),  # strictly after now
    ("*/15 * * * *", "2026-11-29 12:01:00", "2026-11-29 12:15:00"),
    ("0 9 * * *", "2026-11-29 09:00:00", "2026-11-30 09:00:00"),
    ("0 9 * * 1", "2026-11-28 10:00:00", "2026-11-29 09:00:00"),  # 1 = Sunday, as pg_durable
    ("0 9 * * 2", "2026-11-29 10:00:00", "2026-11-30 09:00:00"),  # 2 = Monday
    ("0 9 * * 7", "2026-11-29 10:00:00", "2026-12-05 09:00:00"),  # 7 = Saturday
    ("0 9 * * 2-6", "2026-12-04 10:00:00", "2026-12-07 09:00:00"),  # Mon–Fri: Fri → Mon
    ("30 9 * * * *", "2026-11-29 10:00:00", "2026-11-30 09:30:00"),  # a sixth field, year '*'
    ("0 0 1 1 *", "2026-11-29 00:00:00", "2027-01-01 00:00:00"),
]


@pytest.mark.parametrize(("cron", "now", "expected"), TICKS)
def test_next_tick(cron: str, now: str, expected: str) -> None:
    assert next_tick(cron, _at(now)) == _at(expected)
