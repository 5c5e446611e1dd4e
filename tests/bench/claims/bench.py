"""Orchestration: a cluster, the engine's templates, one database per backlog size, the
timed polls (interleaved), EXPLAIN of each size's poll, the report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.bench.claims.backlog import (
    TEMPLATE_OF,
    Backlog,
    Template,
    add_tasks,
    mix,
    vacuum_analyze,
)
from tests.bench.claims.measure import EMPTY, Queue, explain, measure
from tests.bench.claims.report import claim_plan, markdown
from tests.bench.claims.templates import engine_templates
from tests.bench.harness import git_rev, log, run_bench
from tests.bench.passthrough.servers import BenchError, resolve_bindir, tool_version
from tests.bench.workflows.servers import BENCH_DB, prepare_databases, start_bench_cluster
from tests.support.catalog import install_catalog


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.claims",
        description="What a scheduler pass that claims tasks (df._poll) costs on an empty "
        "queue and with backlogs of due tasks, in one run.",
    )
    p.add_argument(
        "--sizes",
        type=_ints,
        default=[64, 1000, 10_000, 100_000],
        help="due tasks queued, one database each (64,1000,10000,100000; the "
        "empty queue is always measured)",
    )
    p.add_argument(
        "--starts",
        type=_ints,
        default=[256, 100_000],
        help="new instances queued (df.start'ed, not advanced), one database each "
        "(256,100000; none: '')",
    )
    p.add_argument(
        "--claims",
        type=_ints,
        default=[0, 16, 64],
        help="free step slots of the polling engine (0,16,64; 0: no claim)",
    )
    p.add_argument("--reps", type=int, default=300, help="timed polls per cell (300)")
    p.add_argument("--burst", type=int, default=10, help="polls per cell and round (10)")
    p.add_argument("--warmup", type=int, default=20, help="untimed polls per cell first (20)")
    p.add_argument("--pg", default="auto", help="auto (Debian 15, else wheel 18), 15, 18, bin dir")
    p.add_argument("--out", type=Path, help="JSON results (default /tmp/pgdurable-bench-claims-*)")
    p.add_argument("--workdir", type=Path, help="cluster data and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data and logs)")
    args = p.parse_args(argv)
    if args.reps < args.burst or args.burst < 1:
        p.error("--reps must be at least --burst, and --burst at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench(parse_args(argv), "claims", _bench, (BenchError, RuntimeError))


def _load(cluster: Cluster, templates: dict[str, Template], queue: Queue, first: int) -> int:
    """The queue's database with the catalog and its backlog; returns the next free row
    number (ids stay unique across databases)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {queue.database}")
    dsn = cluster.dsn(dbname=queue.database)
    install_catalog(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for kind, count in mix(queue.backlog, queue.due).items():
            if count:
                numbers = range(first, first + count)
                add_tasks(conn, templates[TEMPLATE_OF[kind]], kind, numbers, log)
                first += count
        seconds = vacuum_analyze(conn)
    log(f"{queue.database}: loaded; VACUUM ANALYZE took {seconds:.1f} s")
    return first


def queues(args: argparse.Namespace) -> list[Queue]:
    """The empty queue, then each backlog's sizes, smallest first."""
    tasks = [Queue(Backlog.TASKS, n) for n in sorted(set(args.sizes)) if n > 0]
    starts = [Queue(Backlog.STARTS, n) for n in sorted(set(args.starts)) if n > 0]
    return [EMPTY, *tasks, *starts]


def _bench(
    args: argparse.Namespace, workdir: Path, out_path: Path, stack: contextlib.ExitStack
) -> int:
    started = dt.datetime.now().isoformat(timespec="seconds")
    bindir = resolve_bindir(args.pg)
    log(f"PostgreSQL from {bindir}, work dir {workdir}")
    cluster = start_bench_cluster(bindir, workdir, pgss=False, sockets=None)
    stack.callback(cluster.stop, "fast")
    prepare_databases(cluster, pgss=False)
    log("templates: the rows the engine writes for a leased step and for a timer")
    templates = engine_templates(cluster, BENCH_DB, workdir / "pgdurable.log")
    first = 1
    for queue in queues(args):
        log(f"{queue.database}: {mix(queue.backlog, queue.due)}")
        first = _load(cluster, templates, queue, first)
    dsns = {queue: cluster.dsn(dbname=queue.database) for queue in queues(args)}
    log(f"timing: {args.reps} polls per cell, claims {args.claims}, rounds of {args.burst}")
    timings = measure(dsns, args.claims, args.reps, args.burst, args.warmup)
    plans = {
        queue: explain(dsn, queue.database, max(args.claims), args.warmup)
        for queue, dsn in dsns.items()
    }
    meta = {
        "started": started,
        "postgres": tool_version(bindir / "postgres"),
        "pgdurable_rev": git_rev(),
        "queues": [q.database for q in queues(args)],
        "mix": {
            q.database: {str(k): v for k, v in mix(q.backlog, q.due).items()} for q in queues(args)
        },
        "claims": args.claims,
        "reps": args.reps,
        "command": " ".join(["python -m tests.bench.claims", *sys.argv[1:]]),
    }
    report = markdown(meta, timings, plans)
    print(report, flush=True)
    out_path.write_text(
        json.dumps(
            {
                "meta": meta,
                "timings": [
                    {"database": c.queue.database, "claims": c.claims, **dataclasses.asdict(t)}
                    for c, t in timings.items()
                ],
                "plans": {q.database: p for q, p in plans.items()},
                "claim_plans": {q.database: claim_plan(p) for q, p in plans.items()},
                "markdown": report,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"JSON results: {out_path}")
    return 0
