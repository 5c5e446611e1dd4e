"""WAIT_SCHEDULE: the next cron tick strictly after now, in UTC, read as pg_durable does.

pg_durable parses `"0 " + expr` with the Rust cron crate: five fields fire at second 0, and
day-of-week numbers run 1–7 with 1 = Sunday. croniter counts 0–6 from Sunday, so numeric
day-of-week values are shifted down by one before asking it.
"""

from __future__ import annotations

import datetime
import re

from croniter import croniter

_NUMBER = re.compile(r"\d+")


def next_tick(cron_expr: str, now: float) -> float:
    """Epoch seconds of the next firing strictly after `now`."""
    fields = cron_expr.split()
    if len(fields) == 6:  # sec=0 min hour dom month dow year: the year must be '*' here
        fields = fields[:5]
    fields[4] = _NUMBER.sub(lambda m: str(int(m.group(0)) - 1), fields[4])
    start = datetime.datetime.fromtimestamp(now, datetime.UTC)
    tick = croniter(" ".join(fields), start).get_next(datetime.datetime)
    return float(tick.timestamp())
