"""Orchestration: one cluster, pgdurable in front of it, the scenarios, report, teardown."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.bench.dsl.report import check_targets, markdown, summary
from tests.bench.dsl.scenarios import (
    LOOP_DDL,
    LOOP_TABLE,
    SCENARIOS,
    Bench,
    ScenarioError,
    ScenarioResult,
    Settings,
    run_scenario,
)
from tests.bench.harness import git_rev, log, run_bench
from tests.bench.passthrough.servers import BenchError, resolve_bindir, start_cluster, tool_version
from tests.bench.workflows.servers import (
    BENCH_DB,
    BENCH_ROLE,
    log_problems,
    proxy_pid,
    start_pgdurable,
)

DEFAULT_SCENARIOS = ("join", "race", "signal", "timer", "loop")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.dsl",
        description="pgdurable DSL latencies: JOIN/RACE overhead, signal-to-resume, timers.",
    )
    p.add_argument("--repeats", type=int, default=5, help="workflows per scenario (5)")
    p.add_argument("--quick", action="store_true", help="functional check: --repeats 2")
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma list from {','.join(SCENARIOS)} (all)",
    )
    p.add_argument("--no-loop", action="store_true", help="skip the loop-pacing scenario")
    p.add_argument(
        "--loop-iterations", type=int, default=4, help="iterations per loop workflow (4)"
    )
    p.add_argument(
        "--pg",
        default="auto",
        help="auto (Debian 15 if present, else wheel 18), 15, 18, or a bin dir",
    )
    p.add_argument("--poll-ms", type=float, default=1.0, help="df.status poll interval (1 ms)")
    p.add_argument("--pause", type=float, default=0.3, help="idle seconds between repeats (0.3)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a workflow may take (30)")
    p.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for pgdurable (repeatable), e.g. --proxy-arg=--poll-interval=0.5",
    )
    p.add_argument(
        "--out", type=Path, help="JSON results (default /tmp/pgdurable-bench-dsl-*.json)"
    )
    p.add_argument("--workdir", type=Path, help="cluster data and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data and logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 2
    names = [n for n in args.scenarios.split(",") if n and not (args.no_loop and n == "loop")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"--scenarios: unknown {unknown}; choose from {list(SCENARIOS)}")
    if args.repeats < 1 or args.loop_iterations < 2 or args.poll_ms < 0:
        p.error("--repeats must be ≥ 1, --loop-iterations ≥ 2, --poll-ms ≥ 0")
    args.scenario_names = names
    return args


def _proxy_flag(args: Sequence[str], flag: str, default: float) -> float:
    """The value pgdurable will use for `flag` (`--flag V` or `--flag=V`), else default."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return float(args[i + 1])
        if arg.startswith(flag + "="):
            return float(arg.split("=", 1)[1])
    return default


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench(parse_args(argv), "dsl", _bench, (BenchError, ScenarioError))


def _prepare(cluster: Cluster) -> None:
    """The bench role, its database and the table the loop scenario's body fills."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {BENCH_ROLE} LOGIN")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    with psycopg.connect(cluster.dsn(dbname=BENCH_DB), autocommit=True) as conn:
        conn.execute(LOOP_DDL)
        conn.execute(f"GRANT SELECT, INSERT ON {LOOP_TABLE} TO {BENCH_ROLE}")


def _bench(
    args: argparse.Namespace, workdir: Path, out_path: Path, stack: contextlib.ExitStack
) -> int:
    bindir = resolve_bindir(args.pg)
    log(f"PostgreSQL from {bindir}, work dir {workdir}")
    try:
        cluster = start_cluster(bindir, workdir, {})
    except Exception as exc:
        raise BenchError(f"could not start PostgreSQL from {bindir}: {exc}") from exc
    stack.callback(cluster.stop, "fast")
    _prepare(cluster)
    proxy_log = workdir / "pgdurable.log"
    proxy = start_pgdurable(cluster, proxy_log, list(args.proxy_arg))
    stack.callback(proxy.stop)
    log(f"cluster on port {cluster.port}; pgdurable on port {proxy.port} (pid {proxy_pid(proxy)})")
    meta: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "host": {
            "nproc": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "platform": platform.platform(),
        },
        "postgres": tool_version(bindir / "postgres"),
        "pgdurable_rev": git_rev(),
        "pgdurable_args": ["--log-level", "warning", *args.proxy_arg],
        "python": platform.python_version(),
        "repeats": args.repeats,
        "scenarios": args.scenario_names,
        "poll_ms": args.poll_ms,
        "pause_s": args.pause,
        "timeout_s": args.timeout,
        "loop_iterations": args.loop_iterations,
        "command": " ".join(sys.argv),
    }
    settings = Settings(
        client_dsn=proxy.dsn(user=BENCH_ROLE, dbname=BENCH_DB),
        admin_dsn=cluster.dsn(dbname=BENCH_DB),
        poll_s=args.poll_ms / 1000,
        timeout_s=args.timeout,
        pause_s=args.pause,
        loop_iterations=args.loop_iterations,
        min_loop_iteration_s=_proxy_flag(args.proxy_arg, "--min-loop-iteration-seconds", 1.0),
    )
    bench = Bench(settings)
    stack.callback(bench.close)
    bench.warm_up()
    results: list[ScenarioResult] = []
    for name in args.scenario_names:
        log(f"{name}: {args.repeats} repeats")
        results.append(run_scenario(bench, SCENARIOS[name], args.repeats, log))
    meta["status_polls"] = bench.polls
    bench.close()
    proxy.stop()
    problems: list[str] = []
    count, lines = log_problems(proxy_log)
    if count:
        problems.append(f"pgdurable logged {count} warning/error lines, e.g.:")
        problems += [f"  `{line[:300]}`" for line in lines[:5]]
    meta["host"]["loadavg_end"] = os.getloadavg()
    meta["problems"] = problems
    checks = check_targets(results)
    report = markdown(meta, results, checks)
    print(report, flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps(
            {
                "meta": meta,
                "scenarios": [
                    {
                        **dataclasses.asdict(r),
                        "summary": {k: summary(v) for k, v in r.metrics.items()},
                    }
                    for r in results
                ],
                "targets": [{**dataclasses.asdict(c), "verdict": c.verdict} for c in checks],
                "markdown": report,
            },
            indent=2,
            ensure_ascii=False,
            default=str,
        )
        + "\n"
    )
    log(f"JSON results: {out_path}")
    return 0
