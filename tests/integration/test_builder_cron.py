"""df.wait_for_schedule's cron validation (pg_durable's cron crate on '0 ' || expr)."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.builders import Conn, dumps, node, value

CRON_ACCEPTED = [
    "0 * * * *",
    "* * * * *",
    "*/15 9-17 1,15 jan-jun,DEC Mon-Fri",
    "30 2 */2 * *",
    "0 0 ? * sun",
    "0 0 * * 7",
    "0 0 * * 1-5",
    "5/15 * * * *",
    "0 12 * * Tuesday,thurs",
    "0 0 1 1 * 2030",
    "  0   0 * * *  ",
]


@pytest.mark.parametrize("expr", CRON_ACCEPTED)
def test_cron_accepted(conn: Conn, expr: str) -> None:
    got = value(conn, "SELECT df.wait_for_schedule(%s)", (expr,))
    assert got == dumps(node("WAIT_SCHEDULE", query=dumps({"cron_expr": expr})))


FIELD_COUNT = "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with a year)"

CRON_REJECTED = {
    "0 * * *": f"{FIELD_COUNT}, found 4",
    "0 0 1 1 * 2030 x": f"{FIELD_COUNT}, found 7",
    "": f"{FIELD_COUNT}, found 0",
    "@daily": f"{FIELD_COUNT}, found 1",
    "60 * * * *": "Minutes must be less than or equal to 59. ('60' specified.)",
    "* 24 * * *": "Hours must be less than or equal to 23. ('24' specified.)",
    "* * 0 * *": "Days of Month must be greater than or equal to 1. ('0' specified.)",
    "* * 32 * *": "Days of Month must be less than or equal to 31. ('32' specified.)",
    "* * * 13 *": "Months must be less than or equal to 12. ('13' specified.)",
    "* * * * 0": "Days of Week must be greater than or equal to 1. ('0' specified.)",
    "* * * * 8": "Days of Week must be less than or equal to 7. ('8' specified.)",
    "0 0 1 1 * 1969": "Years must be greater than or equal to 1970. ('1969' specified.)",
    "*/0 * * * *": "range step cannot be zero",
    "*/60 * * * *": "Minutes step must be between 1 and 59. ('60' specified.)",
    "5-1 * * * *": "Invalid range for Minutes: 5-1",
    "* * * * fri-mon": "Invalid named range for Days of Week: fri-mon",
    "mon * * * *": "The 'Minutes' field does not support using names. 'mon' specified.",
    "0 0 L * *": "The 'Days of Month' field does not support using names. 'L' specified.",
    "* * * foo *": "'foo' is not a valid month name.",
    "* * * * funday": "'funday' is not a valid day of the week.",
    "1,,2 * * * *": "cannot parse '' in the Minutes field",
    "1-fri * * * *": "cannot parse '1-fri' in the Minutes field",
    "? * * * *": "cannot parse '?' in the Minutes field",
    "mon/2 * * * *": "cannot parse 'mon/2' in the Minutes field",
    "1/2/3 * * * *": "cannot parse '1/2/3' in the Minutes field",
}


@pytest.mark.parametrize("expr, reason", CRON_REJECTED.items(), ids=CRON_REJECTED.keys())
def test_cron_rejected(conn: Conn, expr: str, reason: str) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT df.wait_for_schedule(%s)", (expr,))
    assert caught.value.sqlstate == "22023"
    assert caught.value.diag.message_primary == f"Invalid cron expression '{expr}': {reason}"
