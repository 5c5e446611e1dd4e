"""Orchestration: one cluster, pgdurable runs, DBOS runs (own process), report, teardown."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgdurable_proxy.cluster import Cluster
from tests.bench.harness import REPO, git_rev, log, run_bench
from tests.bench.passthrough.servers import BenchError, postmaster_pid, resolve_bindir, tool_version
from tests.bench.workflows.pgdurable_runs import PgdurableSetup, run_all
from tests.bench.workflows.report import check_targets, markdown
from tests.bench.workflows.results import RunResult
from tests.bench.workflows.servers import (
    BENCH_DB,
    BENCH_ROLE,
    DBOS_APP_DB,
    DBOS_SYS_DB,
    ensure_dbos,
    log_problems,
    pgss_available,
    prepare_databases,
    proxy_pid,
    start_bench_cluster,
    start_pgdurable,
    system_dsn,
)
from tests.bench.workflows.stats import CpuProbe, StatsReader
from tests.bench.workflows.window import Window
from tests.bench.workflows.workloads import WORKLOADS

MODES = ("closed", "burst", "single")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.workflows",
        description="Durable SQL workflows: pgdurable vs DBOS Transact 3.x on one PostgreSQL.",
    )
    p.add_argument("-T", "--duration", type=float, default=10.0, help="seconds per closed loop")
    p.add_argument("--burst", type=int, default=2000, help="workflows started per burst (2000)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    p.add_argument("--quick", action="store_true", help="functional check: -T 3, --burst 300")
    p.add_argument(
        "--pg",
        default="auto",
        help="auto (Debian 15 if present, else wheel 18), 15, 18, or a bin dir",
    )
    p.add_argument("--no-dbos", action="store_true", help="skip DBOS Transact")
    p.add_argument(
        "--transport",
        choices=("tcp", "unix"),
        default="tcp",
        help="how pgdurable and DBOS reach PostgreSQL: loopback TCP (default) or a Unix socket",
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list (all)")
    p.add_argument("--modes", default=",".join(MODES), help="closed,burst,single (all)")
    p.add_argument(
        "--wait",
        choices=("poll", "await"),
        default="poll",
        help="pgdurable closed loop: a watcher polls df.status (default) or df.await_instance",
    )
    p.add_argument("--poll-ms", type=float, default=1.0, help="watcher poll interval (1 ms)")
    p.add_argument(
        "--max-user-connections", type=int, default=16, help="pgdurable's step connections (16)"
    )
    p.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for pgdurable (repeatable), e.g. --proxy-arg=--poll-interval=0.5",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a workflow may take (60)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per system (2)")
    p.add_argument("--out", type=Path, help="JSON results (default /tmp/pgdurable-bench-wf-*.json)")
    p.add_argument("--workdir", type=Path, help="cluster data and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data and logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.burst, args.warmup = 3.0, 300, 1.0
    if args.duration <= 0 or args.burst < 1 or args.clients < 1:
        p.error("-T, --burst and --clients must be positive")
    for name, values, known in (
        ("--workloads", args.workloads, WORKLOADS),
        ("--modes", args.modes, MODES),
    ):
        unknown = [v for v in values.split(",") if v not in known]
        if unknown:
            p.error(f"{name}: unknown {unknown}; choose from {list(known)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench(parse_args(argv), "wf", _bench, (BenchError,))


def _bench(
    args: argparse.Namespace, workdir: Path, out_path: Path, stack: contextlib.ExitStack
) -> int:
    workloads, modes = args.workloads.split(","), args.modes.split(",")
    bindir = resolve_bindir(args.pg)
    pgss = pgss_available(bindir)
    log(f"PostgreSQL from {bindir} (pg_stat_statements: {pgss}), work dir {workdir}")
    sockets = workdir / "sockets" if args.transport == "unix" else None
    cluster = start_bench_cluster(bindir, workdir, pgss, sockets)
    stack.callback(cluster.stop, "fast")
    prepare_databases(cluster, pgss)
    problems: list[str] = []

    dbos_version: str | None = None
    if not args.no_dbos:  # install before anything is measured
        dbos_version, why = ensure_dbos(workdir / "setup.log")
        if dbos_version is None:
            print(f"SKIPPING DBOS: {why}", file=sys.stderr, flush=True)
            problems.append(f"DBOS skipped: {why}")

    proxy_args = ["--max-user-connections", str(args.max_user_connections), *args.proxy_arg]
    proxy_log = workdir / "pgdurable.log"
    proxy = start_pgdurable(cluster, proxy_log, proxy_args, sockets)
    stack.callback(proxy.stop)
    log(f"cluster on port {cluster.port}; pgdurable on port {proxy.port} (pid {proxy_pid(proxy)})")
    pg_pid = postmaster_pid(cluster)
    meta: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "host": {
            "nproc": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "platform": platform.platform(),
        },
        "postgres": tool_version(bindir / "postgres"),
        "pg_stat_statements": pgss,
        "pgdurable_rev": git_rev(),
        "pgdurable_args": ["--log-level", "warning", *proxy_args],
        "dbos": dbos_version,
        "python": platform.python_version(),
        "clients": args.clients,
        "duration_s": args.duration,
        "burst": args.burst,
        "wait": args.wait,
        "poll_ms": args.poll_ms,
        "timeout_s": args.timeout,
        "workloads": workloads,
        "modes": modes,
        "transport": args.transport,
        "pgdurable_db": BENCH_DB,
        "dbos_dbs": [DBOS_SYS_DB, DBOS_APP_DB],
        "command": " ".join(sys.argv),
    }

    setup = PgdurableSetup(
        client_dsn=proxy.dsn(user=BENCH_ROLE, dbname=BENCH_DB),
        meter_dsn=cluster.dsn(dbname=BENCH_DB),
        clients=args.clients,
        duration_s=args.duration,
        burst=args.burst,
        wait=args.wait,
        poll_s=args.poll_ms / 1000,
        timeout_s=args.timeout,
        warmup_s=args.warmup,
    )
    reader = StatsReader(cluster.dsn(), [BENCH_DB], pgss)
    stack.callback(reader.close)
    cpu = CpuProbe(
        {
            "engine": (proxy_pid(proxy), False),
            "postgres": (pg_pid, True),
            "client": (os.getpid(), False),
        },
        roots=(os.getpid(), pg_pid),
    )
    tcp_port = cluster.port if sockets is None else None  # round trips: counted on TCP only
    runs, health = run_all(setup, workloads, modes, Window(reader, cpu, tcp_port))
    problems += [f"pgdurable catalog after the runs: {p}" for p in health]
    proxy.stop()
    count, lines = log_problems(proxy_log)
    if count:
        problems.append(f"pgdurable logged {count} warning/error lines, e.g.:")
        problems += [f"  `{line[:300]}`" for line in lines[:5]]

    if dbos_version is not None:
        selection = (workloads, modes)
        runs += _run_dbos(
            args, cluster, (workdir, sockets), pgss, pg_pid, selection, stack, problems
        )

    for r in runs:
        problems += [f"{r.label}: {e}" for e in r.errors]
        if r.rows_expected is not None and r.rows_found != r.rows_expected:
            problems.append(f"{r.label}: {r.rows_found} rows inserted, {r.rows_expected} expected")
    meta["host"]["loadavg_end"] = os.getloadavg()
    meta["other_cpu_s_max"] = max((r.cpu_s.get("other", 0.0) for r in runs), default=0.0)
    meta["problems"] = problems
    checks = check_targets(runs)
    report = markdown(meta, runs, checks)
    print(report, flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": [dataclasses.asdict(r) for r in runs],
                "targets": [{**dataclasses.asdict(c), "verdict": c.verdict} for c in checks],
                "markdown": report,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"JSON results: {out_path}")
    return 0


def _run_dbos(
    args: argparse.Namespace,
    cluster: Cluster,
    paths: tuple[Path, Path | None],
    pgss: bool,
    pg_pid: int,
    selection: tuple[list[str], list[str]],
    stack: contextlib.ExitStack,
    problems: list[str],
) -> list[RunResult]:
    """The DBOS runs, in a child Python process that is always stopped."""
    workloads, modes = selection
    workdir, sockets = paths  # the work dir, and the socket directory if any
    config = {
        "sys_url": system_dsn(cluster, DBOS_SYS_DB, sockets),
        "app_url": system_dsn(cluster, DBOS_APP_DB, sockets),
        "stats_dsn": cluster.dsn(),
        "databases": [DBOS_SYS_DB, DBOS_APP_DB],
        "pgss": pgss,
        "workloads": workloads,
        "modes": modes,
        "clients": args.clients,
        "duration_s": args.duration,
        "burst": args.burst,
        "warmup_s": args.warmup,
        "postmaster_pid": pg_pid,
        "bench_pid": os.getpid(),
        "port": cluster.port if sockets is None else None,
    }
    cfg_path, out_path = workdir / "dbos_config.json", workdir / "dbos_results.json"
    cfg_path.write_text(json.dumps(config))
    log("DBOS Transact runs (own process)")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.workflows.dbos_runner", str(cfg_path), str(out_path)],
        cwd=REPO,
    )

    def stop_child() -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)

    stack.callback(stop_child)
    per_run = args.duration + args.burst / 20 + 30
    try:
        rc = child.wait(len(workloads) * len(modes) * per_run + 120)
    except subprocess.TimeoutExpired:
        stop_child()
        rc = -1
    if rc != 0:
        problems.append(f"DBOS runner exited with {rc}; its results may be incomplete")
    if not out_path.exists():
        return []
    return [RunResult(**row) for row in json.loads(out_path.read_text())]
