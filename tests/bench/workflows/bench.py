"""Orchestration: one cluster; per link setting (--rtt-ms), the pgdurable runs (one fleet of
processes per --processes count) and the DBOS runs (own process); report; teardown."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgdurable_proxy.cluster import Cluster
from tests.bench.harness import git_rev, log, run_bench
from tests.bench.link.process import LinkProcess
from tests.bench.passthrough.servers import BenchError, postmaster_pid, resolve_bindir, tool_version
from tests.bench.workflows.dbos_process import DbosRuns, run_dbos
from tests.bench.workflows.fleet import start_fleet
from tests.bench.workflows.kill_run import KillResult, measure_kill
from tests.bench.workflows.pgdurable_runs import PgdurableSetup, run_all
from tests.bench.workflows.report import check_targets, markdown
from tests.bench.workflows.results import RunResult
from tests.bench.workflows.servers import (
    BENCH_DB,
    BENCH_ROLE,
    DBOS_APP_DB,
    DBOS_SYS_DB,
    ensure_dbos,
    pgss_available,
    prepare_databases,
    start_bench_cluster,
    system_dsn,
)
from tests.bench.workflows.stats import CpuProbe, StatsReader
from tests.bench.workflows.window import Window
from tests.bench.workflows.workloads import DEFAULT_WORKLOADS, WORKLOADS, runs_of

MODES = ("closed", "burst", "single")
DBOS_POOL = 32  # DBOS's sys_db_pool_size and its datasource's pool_size (dbos_runner.py)
PGDURABLE_LEASE_S = 30.0  # pgdurable's --lease-seconds default


def _numbers(kind: type[int] | type[float], text: str) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of numbers ≥ 0")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.workflows",
        description="Durable SQL workflows: pgdurable vs DBOS Transact 3.x on one PostgreSQL.",
    )
    p.add_argument("-T", "--duration", type=float, help="seconds per closed loop (10)")
    p.add_argument("--burst", type=int, help="workflows started per burst (2000)")
    p.add_argument(
        "--clients",
        type=lambda t: _numbers(int, t),
        default=[8],
        help="concurrent clients of the closed loop, a comma list (8); bursts use the first",
    )
    p.add_argument(
        "--quick", action="store_true", help="functional check: -T 3, --burst 300 unless given"
    )
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
    p.add_argument(
        "--rtt-ms",
        type=lambda t: _numbers(float, t),
        default=[0.0],
        help="round trips of the latency link between pgdurable/DBOS and PostgreSQL, a comma "
        "list (0: no link); e.g. 0,2,20,70",
    )
    p.add_argument(
        "--processes",
        type=lambda t: _numbers(int, t),
        default=[1],
        help="pgdurable processes on the database, a comma list (1); clients spread over them",
    )
    p.add_argument(
        "--kill",
        action="store_true",
        help="with 2+ processes: a burst during which the last process is SIGKILLed",
    )
    p.add_argument("--kill-workload", default="insert3", help="the crash run's workload")
    p.add_argument(
        "--kill-after", type=float, default=1.0, help="seconds after the first start (1)"
    )
    p.add_argument("--lease-seconds", type=float, help="pgdurable's --lease-seconds (its 30)")
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma list of {', '.join(WORKLOADS)} ({', '.join(DEFAULT_WORKLOADS)})",
    )
    p.add_argument("--modes", default=",".join(MODES), help="closed,burst,single (all)")
    p.add_argument(
        "--wait",
        choices=("poll", "await"),
        default="poll",
        help="pgdurable closed loop: a watcher polls df.status (default) or df.await_instance",
    )
    p.add_argument("--poll-ms", type=float, default=1.0, help="watcher poll interval (1 ms)")
    p.add_argument(
        "--max-user-connections",
        type=int,
        help="pgdurable's step connections per process (16; 32, DBOS's pool, when a closed "
        "loop has more than 16 clients)",
    )
    p.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for pgdurable (repeatable), e.g. --proxy-arg=--poll-interval=0.5",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a workflow may take (60)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per system (2)")
    p.add_argument("--out", type=Path, help="JSON results (default /tmp/pgdurable-bench-wf-*.json)")
    p.add_argument("--workdir", type=Path, help="cluster data and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data and logs)")
    args = p.parse_args(argv)
    quick = args.quick
    args.duration = args.duration if args.duration is not None else (3.0 if quick else 10.0)
    args.burst = args.burst if args.burst is not None else (300 if quick else 2000)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    if args.duration <= 0 or args.burst < 1 or min(args.clients) < 1 or min(args.processes) < 1:
        p.error("-T, --burst, --clients and --processes must be positive")
    if args.transport == "unix" and any(args.rtt_ms):
        p.error("--rtt-ms needs --transport tcp: the latency link is a TCP relay")
    if args.kill_workload not in WORKLOADS:
        p.error(f"--kill-workload: choose from {list(WORKLOADS)}")
    if args.max_user_connections is None:
        args.max_user_connections = DBOS_POOL if max(args.clients) > 16 else 16
    args.processes = sorted({1, *args.processes})  # scale-out is measured against one
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


@dataclass
class _Bench:
    """One benchmark run's servers, settings and findings."""

    args: argparse.Namespace
    workdir: Path
    stack: contextlib.ExitStack
    cluster: Cluster
    sockets: Path | None
    pgss: bool
    pg_pid: int
    reader: StatsReader
    proxy_args: list[str]
    problems: list[str] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    kills: list[KillResult] = field(default_factory=list)
    links: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def workloads(self) -> list[str]:
        return list(self.args.workloads.split(","))

    @property
    def modes(self) -> list[str]:
        return list(self.args.modes.split(","))


def _bench(
    args: argparse.Namespace, workdir: Path, out_path: Path, stack: contextlib.ExitStack
) -> int:
    bindir = resolve_bindir(args.pg)
    pgss = pgss_available(bindir)
    log(f"PostgreSQL from {bindir} (pg_stat_statements: {pgss}), work dir {workdir}")
    sockets = workdir / "sockets" if args.transport == "unix" else None
    cluster = start_bench_cluster(bindir, workdir, pgss, sockets)
    stack.callback(cluster.stop, "fast")
    prepare_databases(cluster, pgss)
    log(f"cluster on port {cluster.port}")
    problems: list[str] = []

    dbos_version: str | None = None
    if not args.no_dbos:  # install before anything is measured
        dbos_version, why = ensure_dbos(workdir / "setup.log")
        if dbos_version is None:
            print(f"SKIPPING DBOS: {why}", file=sys.stderr, flush=True)
            problems.append(f"DBOS skipped: {why}")

    proxy_args = ["--max-user-connections", str(args.max_user_connections)]
    if args.lease_seconds is not None:
        proxy_args += ["--lease-seconds", f"{args.lease_seconds:g}"]
    proxy_args += args.proxy_arg
    reader = StatsReader(cluster.dsn(), [BENCH_DB], pgss)
    stack.callback(reader.close)
    run = _Bench(
        args, workdir, stack, cluster, sockets, pgss, postmaster_pid(cluster), reader, proxy_args
    )
    run.problems += problems
    meta = _meta(args, bindir, pgss, dbos_version, proxy_args)
    for rtt in args.rtt_ms:
        _at_rtt(run, rtt, dbos_version is not None)

    for r in run.runs:
        run.problems += [f"{r.label}: {e}" for e in r.errors]
        if r.rows_expected is not None and r.rows_found != r.rows_expected:
            run.problems.append(
                f"{r.label}: {r.rows_found} rows inserted, {r.rows_expected} expected"
            )
    meta["host"]["loadavg_end"] = os.getloadavg()
    meta["other_cpu_s_max"] = max((r.cpu_s.get("other", 0.0) for r in run.runs), default=0.0)
    meta["problems"] = run.problems
    meta["links"] = run.links
    checks = check_targets([r for r in run.runs if r.rtt_ms == min(args.rtt_ms)])
    report = markdown(meta, run.runs, checks, run.kills)
    print(report, flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": [dataclasses.asdict(r) for r in run.runs],
                "kills": [dataclasses.asdict(k) for k in run.kills],
                "targets": [{**dataclasses.asdict(c), "verdict": c.verdict} for c in checks],
                "markdown": report,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"JSON results: {out_path}")
    return 0


def _meta(
    args: argparse.Namespace, bindir: Path, pgss: bool, dbos: str | None, proxy_args: list[str]
) -> dict[str, Any]:
    return {
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
        "dbos": dbos,
        "python": platform.python_version(),
        "clients": args.clients,
        "duration_s": args.duration,
        "burst": args.burst,
        "wait": args.wait,
        "poll_ms": args.poll_ms,
        "timeout_s": args.timeout,
        "workloads": args.workloads.split(","),
        "modes": args.modes.split(","),
        "transport": args.transport,
        "rtt_ms": args.rtt_ms,
        "processes": args.processes,
        "lease_seconds": args.lease_seconds or PGDURABLE_LEASE_S,
        "pgdurable_db": BENCH_DB,
        "dbos_dbs": [DBOS_SYS_DB, DBOS_APP_DB],
        "command": " ".join(sys.argv),
    }


def _at_rtt(run: _Bench, rtt: float, with_dbos: bool) -> None:
    """Every pgdurable fleet, then DBOS, over a link of this rtt (0: straight to PostgreSQL)."""
    link = None
    if rtt > 0:
        link = LinkProcess(run.cluster.port, rtt / 2, run.workdir / f"link-{rtt:g}.json")
        link.start()
        run.stack.callback(link.stop)
        log(f"latency link: port {link.port} → {run.cluster.port}, {rtt / 2:g} ms each way")
    for n in run.args.processes:
        _pgdurable_fleet(run, rtt, link, n)
    if with_dbos:
        run.runs += run_dbos(_dbos_runs(run, rtt, link), run.workdir, run.stack, run.problems)
    if link is not None:
        run.links[f"{rtt:g}"] = link.stop()


def _window(run: _Bench, link: LinkProcess | None, engine_pids: tuple[int, ...]) -> Window:
    watch: dict[str, tuple[int | tuple[int, ...], bool]] = {
        "engine": (engine_pids, False),
        "postgres": (run.pg_pid, True),
        "client": (os.getpid(), False),
    }
    if link is not None:
        watch["link"] = (link.pid, False)
    cpu = CpuProbe(watch, roots=(os.getpid(), run.pg_pid))
    if link is not None:  # round trips: counted where the link receives them
        return Window(run.reader, cpu, link.port, run.cluster.port)
    return Window(run.reader, cpu, run.cluster.port if run.sockets is None else None)


def _pgdurable_fleet(run: _Bench, rtt: float, link: LinkProcess | None, n: int) -> None:
    """n pgdurable processes: every run (spread over them), the crash run if asked, stop."""
    args = run.args
    upstream = system_dsn(run.cluster, BENCH_DB, run.sockets, link.port if link else None)
    meter_dsn = run.cluster.dsn(dbname=BENCH_DB)
    logs = run.workdir / f"pgdurable-rtt{rtt:g}-x{n}"
    logs.mkdir(parents=True, exist_ok=True)
    fleet = start_fleet(upstream, meter_dsn, n, logs, run.proxy_args)
    run.stack.callback(fleet.stop)
    setup = PgdurableSetup(
        client_dsns=fleet.client_dsns(),
        meter_dsn=meter_dsn,
        clients=tuple(args.clients),
        duration_s=args.duration,
        burst=args.burst,
        wait=args.wait,
        poll_s=args.poll_ms / 1000,
        timeout_s=args.timeout,
        warmup_s=args.warmup,
        rtt_ms=rtt,
        direct_dsn=run.cluster.dsn(user=BENCH_ROLE, dbname=BENCH_DB),
    )
    runs, health = run_all(
        setup,
        runs_of(run.workloads, run.modes, args.clients),
        _window(run, link, fleet.pids),
        fleet,
    )
    run.runs += runs
    where = f"rtt {rtt:g} ms, {n} process(es)"
    run.problems += [f"pgdurable catalog after the runs ({where}): {p}" for p in health]
    if args.kill and n >= 2:
        lease = args.lease_seconds or PGDURABLE_LEASE_S
        log(f"crash run: {args.kill_workload} burst, SIGKILL of process {n} ({where})")
        kill = measure_kill(
            setup,
            fleet,
            args.kill_workload,
            kill_after_s=args.kill_after,
            lease_seconds=lease,
            rtt_ms=rtt,
        )
        run.kills.append(kill)
        run.problems += [f"crash run ({where}): {e}" for e in kill.errors]
    run.problems += fleet.stop()


def _dbos_runs(run: _Bench, rtt: float, link: LinkProcess | None) -> DbosRuns:
    link_port = link.port if link is not None else None
    counted = link_port if link_port is not None else run.cluster.port
    return DbosRuns(
        sys_url=system_dsn(run.cluster, DBOS_SYS_DB, run.sockets, link_port),
        app_url=system_dsn(run.cluster, DBOS_APP_DB, run.sockets, link_port),
        stats_dsn=run.cluster.dsn(),
        databases=[DBOS_SYS_DB, DBOS_APP_DB],
        pgss=run.pgss,
        workloads=run.workloads,
        modes=run.modes,
        clients=list(run.args.clients),
        duration_s=run.args.duration,
        burst=run.args.burst,
        warmup_s=run.args.warmup,
        postmaster_pid=run.pg_pid,
        port=counted if run.sockets is None else None,
        pg_port=run.cluster.port if link is not None else None,
        link_pid=link.pid if link is not None else None,
        rtt_ms=rtt,
    )
