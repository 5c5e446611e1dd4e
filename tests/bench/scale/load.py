"""Finished instances loaded by SQL straight into the catalog, shaped like a real one's rows.

Each loaded instance copies the rows a finished hello world (`df.start('SELECT 1')`) left in
df.instances, df.nodes, df._node_state, df._executions and df._instance_vars, with its own
id, an outcome (90 % completed, 7 % failed, 3 % cancelled) and a completion time spread over
the last 60 days. Constraints, foreign keys and indexes all stay on; chunks of `CHUNK`
instances per transaction keep the deferred foreign-key queue small.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

CHUNK = 50_000
SPREAD = "60 days"

# $1 template instance, $2 first number, $3 last number, $4 how many in all (for the spread).
_LOAD = (
    """
WITH tpl AS (
    SELECT i.submitted_by, n.result, n.query, s.raw_result, s.delivery, v.vars, e.output
    FROM df.instances i
    JOIN df.nodes n ON n.instance_id = i.id AND n.id = i.root_node
    LEFT JOIN df._node_state s ON s.instance_id = i.id AND s.node_id = n.id
    LEFT JOIN df._instance_vars v ON v.instance_id = i.id
    LEFT JOIN df._executions e ON e.instance_id = i.id AND e.execution_id = 1
    WHERE i.id = %(template)s
), gen AS (
    SELECT lpad(to_hex(g), 8, '0') AS id,
           CASE WHEN g %% 100 < 90 THEN 'completed' WHEN g %% 100 < 97 THEN 'failed'
                ELSE 'cancelled' END AS status,
           CASE WHEN g %% 5 = 0 THEN 'nightly-' || (g %% 7) END AS label,
           now() - interval '"""
    + SPREAD
    + """' * (((g::bigint * 2654435761) %% %(total)s)::float8
                                      / %(total)s) AS done_at
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
), ins AS (
    INSERT INTO df.instances (id, label, root_node, status, submitted_by, database,
                              created_at, updated_at, completed_at)
    SELECT g.id, g.label, g.id, g.status, tpl.submitted_by, NULL,
           g.done_at - interval '4 ms', g.done_at, g.done_at
    FROM gen g CROSS JOIN tpl
    RETURNING id, status, submitted_by, created_at, completed_at
), nodes AS (
    INSERT INTO df.nodes (id, instance_id, node_type, query, status, result, error,
                          submitted_by, created_at, updated_at)
    SELECT i.id, i.id, 'SQL', tpl.query,
           CASE i.status WHEN 'completed' THEN 'completed' WHEN 'failed' THEN 'failed'
                ELSE 'pending' END,
           CASE WHEN i.status = 'completed' THEN tpl.result END,
           CASE WHEN i.status = 'failed' THEN 'division by zero' END,
           i.submitted_by, i.created_at, i.completed_at
    FROM ins i CROSS JOIN tpl
    RETURNING 1
), state AS (
    INSERT INTO df._node_state (instance_id, node_id, raw_result, delivery)
    SELECT i.id, i.id, tpl.raw_result, tpl.delivery
    FROM ins i CROSS JOIN tpl WHERE i.status = 'completed'
    RETURNING 1
), vars AS (
    INSERT INTO df._instance_vars (instance_id, vars)
    SELECT i.id, coalesce(tpl.vars, '{}') FROM ins i CROSS JOIN tpl
    RETURNING 1
), execs AS (
    INSERT INTO df._executions (instance_id, execution_id, submitted_by, status, started_at,
                                completed_at, event_count, output)
    SELECT i.id, 1, i.submitted_by,
           CASE WHEN i.status = 'completed' THEN 'Completed' ELSE 'Failed' END,
           i.created_at, i.completed_at, 4,
           CASE WHEN i.status = 'completed' THEN tpl.output END
    FROM ins i CROSS JOIN tpl
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM nodes)
"""
)

Progress = Callable[[str], None]


def loaded_id(number: int) -> str:
    """The id of loaded instance `number` (1-based)."""
    return f"{number:08x}"


def loaded_completed(number: int) -> bool:
    """Whether loaded instance `number` completed (so df.result has a value)."""
    return number % 100 < 90


def bulk_load(superuser_dsn: str, template: str, total: int, progress: Progress) -> float:
    """Insert `total` finished instances modelled on `template`, then ANALYZE; seconds taken."""
    started = time.monotonic()
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        for first in range(1, total + 1, CHUNK):
            last = min(first + CHUNK - 1, total)
            with conn.transaction():
                row = conn.execute(
                    _LOAD, {"template": template, "first": first, "last": last, "total": total}
                ).fetchone()
            if row is None or row[0] != last - first + 1:
                raise RuntimeError(f"bulk load of {first}..{last} inserted {row}")
            progress(f"loaded {last:,} / {total:,} ({time.monotonic() - started:.0f} s)")
        for table in (
            "df.instances",
            "df.nodes",
            "df._node_state",
            "df._executions",
            "df._instance_vars",
        ):
            conn.execute(f"ANALYZE {table}")
    return time.monotonic() - started
