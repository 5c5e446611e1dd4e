"""A backlog of tasks written by SQL in bulk, each row a copy of what the engine wrote.

The engine writes the templates (templates.py): an instance whose SQL step is leased to
an engine, and one whose first node is a sleep (a timer: no lease until it is due). Each
copy gets its own random-looking 8-hex id and its own times; every column is the
template's otherwise (jsonb_populate_record, so a column added to the catalog is copied
too). Constraints, foreign keys, triggers and indexes all stay on.

Two backlogs, each in databases of its own:

* `tasks`, `n` due tasks (what a busy deployment holds when one of its processes died and a
  burst of timers came due): `n / 2` due timers (SLEEP tasks, no lease, due over the last
  10 minutes) and `n / 2` expired leases (SQL tasks leased to a process that died, their
  leases expired over the last 10 minutes, due 30 s before); beside them, not claimable,
  `n / 4` SQL tasks leased to a living engine (in flight, or planned and waiting for a
  step slot: due in the past, leases valid for a day) and `n / 4` timers not due yet
  (due within the next day).
* `starts`, `n` new instances: df.start'ed, their first advance due over the last 10
  minutes, not advanced yet (a burst of starts the engines have not caught up with).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import psycopg
from psycopg.types.json import Jsonb

CHUNK = 50_000
DEAD_ENGINE = uuid.UUID("00000000-0000-4000-8000-00000000dead")
LIVE_ENGINE = uuid.UUID("00000000-0000-4000-8000-0000000011fe")


class Kind(StrEnum):
    """What a generated instance is to a scheduler pass."""

    DUE_TIMER = "due timer"
    EXPIRED_LEASE = "expired lease"
    LIVE_LEASE = "live lease"
    FUTURE_TIMER = "timer not due"
    NEW_INSTANCE = "new instance"


class Backlog(StrEnum):
    """Which backlog a database holds."""

    TASKS = "tasks"
    STARTS = "starts"


# Each kind's template (templates.py).
TEMPLATE_OF = {
    Kind.DUE_TIMER: "timer",
    Kind.EXPIRED_LEASE: "sql",
    Kind.LIVE_LEASE: "sql",
    Kind.FUTURE_TIMER: "timer",
    Kind.NEW_INSTANCE: "new",
}


@dataclass(frozen=True)
class Template:
    """An instance's rows as the engine wrote them, one JSON object per row."""

    instance: dict[str, object]
    nodes: list[dict[str, object]]
    executions: list[dict[str, object]]
    vars: list[dict[str, object]]
    node_state: list[dict[str, object]]
    tasks: list[dict[str, object]]  # none for a new instance
    advances: list[dict[str, object]]  # its df.start's, for a new instance


# Each kind: its task's due_at, lease_owner, lease_token, lease_until and attempts, from a
# spread s in [0, 1) (a hash of the row number, so neighbouring rows are not in time order).
_TASK_TIMES: dict[Kind, str] = {
    Kind.DUE_TIMER: "now() - interval '10 min' * s, NULL::uuid, NULL::uuid, NULL::timestamptz, 0",
    Kind.EXPIRED_LEASE: (
        "now() - interval '10 min' * s - interval '30 s', %(dead)s::uuid, gen_random_uuid(),"
        " now() - interval '10 min' * s, 1"
    ),
    Kind.LIVE_LEASE: (
        "now() - interval '10 min' * s, %(live)s::uuid, gen_random_uuid(),"
        " now() + interval '1 day', 1"
    ),
    Kind.FUTURE_TIMER: (
        "now() + interval '1 min' + interval '1 day' * s, NULL::uuid, NULL::uuid,"
        " NULL::timestamptz, 0"
    ),
    Kind.NEW_INSTANCE: "NULL::timestamptz, NULL::uuid, NULL::uuid, NULL::timestamptz, 0",
}

# $first..$last are row numbers; an instance id is a bijection of the number on 32 bits
# (odd multiplier), so ids are unique and unordered as df.start's random ones are.
_INSERT = """
WITH g AS (
    SELECT lpad(to_hex((n * 2654435761) %% 4294967296), 8, '0') AS id,
           ((n * 40503) %% 65536)::float8 / 65536 AS s
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) n
), ins AS (
    INSERT INTO df.instances
    SELECT r.* FROM g, jsonb_populate_record(NULL::df.instances, %(instance)s::jsonb
                                             || jsonb_build_object('id', g.id)) r
    RETURNING 1
), nodes AS (
    INSERT INTO df.nodes
    SELECT r.* FROM g, jsonb_array_elements(%(nodes)s::jsonb) nd,
           jsonb_populate_record(NULL::df.nodes, CASE
               WHEN jsonb_typeof(nd -> 'status_details') = 'object'
               THEN jsonb_set(nd, '{status_details,execution_id}', to_jsonb(g.id || '::1'))
               ELSE nd END
           || jsonb_build_object('instance_id', g.id)) r
    RETURNING 1
), execs AS (
    INSERT INTO df._executions
    SELECT r.* FROM g, jsonb_array_elements(%(executions)s::jsonb) e,
           jsonb_populate_record(NULL::df._executions,
                                 e || jsonb_build_object('instance_id', g.id)) r
    RETURNING 1
), vars AS (
    INSERT INTO df._instance_vars
    SELECT r.* FROM g, jsonb_array_elements(%(vars)s::jsonb) v,
           jsonb_populate_record(NULL::df._instance_vars,
                                 v || jsonb_build_object('instance_id', g.id)) r
    RETURNING 1
), state AS (
    INSERT INTO df._node_state
    SELECT r.* FROM g, jsonb_array_elements(%(node_state)s::jsonb) v,
           jsonb_populate_record(NULL::df._node_state,
                                 v || jsonb_build_object('instance_id', g.id)) r
    RETURNING 1
), tasks AS (
    INSERT INTO df._tasks
    SELECT r.*
    FROM g CROSS JOIN LATERAL (SELECT {times}) AS x(due_at, lease_owner, lease_token,
                                                     lease_until, attempts),
         jsonb_array_elements(%(tasks)s::jsonb) t,
         jsonb_populate_record(NULL::df._tasks, t
             || jsonb_build_object('instance_id', g.id, 'due_at', x.due_at,
                                   'lease_owner', x.lease_owner, 'lease_token', x.lease_token,
                                   'lease_until', x.lease_until, 'attempts', x.attempts,
                                   'created_at', least(x.due_at, now()))) r
    RETURNING 1
), advances AS (
    INSERT INTO df._advance
    SELECT r.* FROM g, jsonb_array_elements(%(advances)s::jsonb) a,
           jsonb_populate_record(NULL::df._advance, a
               || jsonb_build_object('instance_id', g.id,
                                     'requested_at', now() - interval '10 min' * g.s)) r
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM tasks), (SELECT count(*) FROM advances)
"""

Progress = Callable[[str], None]


def mix(backlog: Backlog, due: int) -> dict[Kind, int]:
    """How many instances of each kind a backlog of `due` due tasks or new instances holds."""
    if backlog == Backlog.STARTS:
        return {Kind.NEW_INSTANCE: due}
    return {
        Kind.DUE_TIMER: due // 2,
        Kind.EXPIRED_LEASE: due - due // 2,
        Kind.LIVE_LEASE: due // 4,
        Kind.FUTURE_TIMER: due // 4,
    }


def _jsonb(rows: object) -> Jsonb:
    return Jsonb(json.loads(json.dumps(rows, default=str)))


def add_tasks(
    conn: psycopg.Connection[tuple[object, ...]],
    template: Template,
    kind: Kind,
    numbers: range,
    progress: Progress,
) -> None:
    """Copies of `template` for row numbers `numbers`, their tasks of `kind`, in chunks."""
    sql = _INSERT.replace("{times}", _TASK_TIMES[kind])
    params: dict[str, object] = {
        "instance": _jsonb(template.instance),
        "nodes": _jsonb(template.nodes),
        "executions": _jsonb(template.executions),
        "vars": _jsonb(template.vars),
        "node_state": _jsonb(template.node_state),
        "tasks": _jsonb(template.tasks),
        "advances": _jsonb(template.advances),
        "dead": DEAD_ENGINE,
        "live": LIVE_ENGINE,
    }
    for first in range(numbers.start, numbers.stop, CHUNK):
        last = min(first + CHUNK, numbers.stop) - 1
        with conn.transaction():
            row = conn.execute(sql, {**params, "first": first, "last": last}).fetchone()
        count = last - first + 1
        expected = (count, count * len(template.tasks), count * len(template.advances))
        if row != expected:
            raise RuntimeError(f"backlog rows {first}..{last} ({kind}): inserted {row}")
    progress(f"{kind}: {len(numbers):,} tasks")


def vacuum_analyze(conn: psycopg.Connection[tuple[object, ...]]) -> float:
    """VACUUM ANALYZE the tables a claim reads, as autovacuum would after a bulk load."""
    started = time.monotonic()
    for table in ("df.instances", "df.nodes", "df._executions", "df._tasks", "df._advance"):
        conn.execute(f"VACUUM ANALYZE {table}")
    return time.monotonic() - started
