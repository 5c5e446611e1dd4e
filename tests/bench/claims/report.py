"""The markdown report: per backlog, one row per (queue, free slots) with the ratio to the
empty queue and to the smallest full one, and the key lines of the plans that matter."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from engine.store import ADVANCES_PER_POLL
from tests.bench.claims.backlog import Backlog
from tests.bench.claims.measure import EMPTY, Cell, Queue, Timing, statement_of

TARGET = 2.0  # issue 16, item 5: a claim with 100,000 due tasks ≤ 2× the empty queue's
TARGET_SIZE = 100_000
_KEY_LINE = re.compile(
    r"(Scan|Sort|Limit|LockRows|Update on|Nested Loop|Hash|Join|Append|Aggregate|Rows Removed"
    r"|Buffers|Index Cond|Filter|Execution Time|Planning Time)"
)


def claim_plan(plans: list[str]) -> str:
    """The plan of the claim (df._poll's UPDATE of df._tasks), or ''."""
    return next((p for p in plans if "UPDATE df._tasks" in statement_of(p)), "")


def advances_plan(plans: list[str]) -> str:
    """The plan of the pass's choice of instances to advance, or ''."""
    return next(
        (p for p in plans if "df._advance" in statement_of(p) and "GROUP BY" in statement_of(p)),
        "",
    )


def key_lines(plan: str) -> list[str]:
    """The plan's node, condition, buffer and timing lines (not the query text)."""
    statement = statement_of(plan)
    body = plan.split(statement, 1)[-1] if statement else plan
    return [line.rstrip() for line in body.splitlines() if _KEY_LINE.search(line)]


def _ratio(t: Timing, base: Timing | None) -> str:
    return "" if base is None else f"{t.median_ms / base.median_ms:.2f}"


def _counts(values: list[int]) -> str:
    return "/".join(str(v) for v in values)


def _table(
    timings: dict[Cell, Timing], backlog: Backlog, full: Queue | None, what: str
) -> list[str]:
    """Rows of the empty queue and of `backlog`'s queues; `full` is the smallest queue from
    which a pass takes its whole batch (the growth baseline)."""
    base_name = "" if full is None else f"{full.due:,}"
    lines = [
        f"| {what} | free slots | claimed | handed out | median ms | p99 ms | ÷ empty "
        f"| ÷ {base_name} | {TARGET_SIZE:,}: ≤ {TARGET:g}× |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    cells = [c for c in timings if c.queue == EMPTY or c.queue.backlog == backlog]
    for cell in sorted(cells, key=lambda c: (c.claims, c.queue.due)):
        t = timings[cell]
        empty = timings.get(Cell(EMPTY, cell.claims))
        base = None if full is None else timings.get(Cell(full, cell.claims))
        verdict = ""
        if cell.queue.due == TARGET_SIZE and base is not None:
            verdict = "PASS" if t.median_ms <= TARGET * base.median_ms else "FAIL"
        lines.append(
            f"| {cell.queue.due:,} | {cell.claims} | {_counts(t.claimed)} | {_counts(t.handed)} "
            f"| {t.median_ms:.3f} | {t.p99_ms:.3f} | {_ratio(t, empty)} | {_ratio(t, base)} "
            f"| {verdict} |"
        )
    return lines


def _smallest(queues: list[Queue], backlog: Backlog, at_least: int) -> Queue | None:
    return min((q for q in queues if q.backlog == backlog and q.due >= at_least), default=None)


def _plans(
    plans: dict[Queue, list[str]], backlog: Backlog, title: str, pick: Callable[[list[str]], str]
) -> list[str]:
    lines: list[str] = []
    for queue, queue_plans in sorted(plans.items()):
        if queue != EMPTY and queue.backlog != backlog:
            continue
        lines += ["", f"{title}, {queue.database}:", "", "```"]
        lines += key_lines(pick(queue_plans)) or ["(not run)"]
        lines.append("```")
    return lines


def markdown(
    meta: dict[str, Any], timings: dict[Cell, Timing], plans: dict[Queue, list[str]]
) -> str:
    queues = sorted({c.queue for c in timings})
    full_tasks = _smallest(queues, Backlog.TASKS, max(meta["claims"]))
    full_starts = _smallest(queues, Backlog.STARTS, ADVANCES_PER_POLL)
    lines = [
        f"`{meta['command']}`",
        "",
        f"{meta['postgres']}, pgdurable {meta['pgdurable_rev']}, {meta['started']}; "
        f"{meta['reps']} timed passes per row, each rolled back (the queue stays as loaded).",
        "",
        "Due tasks queued (half due timers, half expired leases; beside them a quarter as "
        "many live leases and a quarter as many timers not due):",
        "",
        *_table(timings, Backlog.TASKS, full_tasks, "due tasks"),
    ]
    if full_starts is not None:
        lines += [
            "",
            "New instances queued (df.start'ed, first advance due):",
            "",
            *_table(timings, Backlog.STARTS, full_starts, "new instances"),
        ]
    lines += _plans(plans, Backlog.TASKS, "Claim", claim_plan)
    if full_starts is not None:
        lines += _plans(plans, Backlog.STARTS, "Instances to advance", advances_plan)
    return "\n".join(lines) + "\n"
