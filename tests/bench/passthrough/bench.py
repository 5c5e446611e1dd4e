"""Orchestration: servers up, interleaved pgbench matrix, report, everything down."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgdurable_proxy.cluster import Cluster, free_port
from tests.bench.harness import git_rev, log, run_bench
from tests.bench.passthrough.measure import RunResult, Workload, outside_cpu_s, run_pgbench
from tests.bench.passthrough.report import (
    NOISE_SHARE,
    TARGETS,
    check_targets,
    markdown,
    summarise,
)
from tests.bench.passthrough.servers import (
    BENCH_DB,
    BenchError,
    PgBouncer,
    find_or_install_pgbouncer,
    init_pgbench_db,
    postmaster_pid,
    proxy_pid,
    resolve_bindir,
    start_cluster,
    start_pgdurable,
    tool_version,
)

CLIENT_SHAPES = {"8": (8, 2), "1": (1, 1)}
PROTOCOLS = ("simple", "extended", "prepared")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.passthrough",
        description="pgbench -n -S: direct vs pgdurable vs PgBouncer (session mode).",
    )
    p.add_argument("-T", "--duration", type=int, default=10, help="seconds per run (10)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (3)")
    p.add_argument("--quick", action="store_true", help="functional check: -T 3, 1 repeat")
    p.add_argument(
        "--pg",
        default="auto",
        help="auto (Debian 15 if present, else wheel 18), 15, 18, or a bin dir",
    )
    p.add_argument("--scale", type=int, default=10, help="pgbench -i -s (10)")
    p.add_argument("--clients", default="8,1", help="client shapes: 8 = -c 8 -j 2, 1 = -c 1 -j 1")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument(
        "--targets",
        default="direct,pgdurable,pgbouncer,pipe",
        help=f"comma-separated, of {','.join(TARGETS)} (pgdurable-py: pgdurable with "
        "PGDURABLE_PURE_PYTHON=1); default direct,pgdurable,pgbouncer,pipe",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra PostgreSQL setting (repeatable); default only max_connections=200",
    )
    p.add_argument("--pgbouncer", type=Path, help="pgbouncer binary (default: PATH, /usr/sbin)")
    p.add_argument("--pool-size", type=int, default=20, help="pgbouncer default_pool_size (20)")
    p.add_argument(
        "--no-install", action="store_true", help="do not apt-get install pgbouncer when missing"
    )
    p.add_argument("--warmup", type=int, default=2, help="seconds of -c 8 warm-up per target (2)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for a quiet 1 s window (30)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="re-run a run disturbed by outside CPU load up to N times (2)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="JSON results (default /tmp/pgdurable-bench-passthrough-<time>.json)",
    )
    p.add_argument("--workdir", type=Path, help="cluster data and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data and logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.repeats, args.quiet_wait, args.retries = 3, 1, 0.0, 0
    if args.duration < 1 or args.repeats < 1:
        p.error("-T and --repeats must be >= 1")
    for name, values, known in (
        ("--clients", args.clients, CLIENT_SHAPES),
        ("--protocols", args.protocols, PROTOCOLS),
        ("--targets", args.targets, TARGETS),
    ):
        unknown = [v for v in values.split(",") if v not in known]
        if unknown:
            p.error(f"{name}: unknown {unknown}; choose from {list(known)}")
    for item in args.set:
        if "=" not in item:
            p.error(f"--set {item}: expected NAME=VALUE")
    return args


def workloads_of(args: argparse.Namespace) -> list[Workload]:
    return [
        Workload(*CLIENT_SHAPES[c], protocol)
        for c in args.clients.split(",")
        for protocol in args.protocols.split(",")
    ]


@dataclass
class Endpoint:
    """Where pgbench connects for one target, and which process to charge CPU to."""

    name: str
    port: int
    pid: int | None


def _framing(pure_python: bool) -> str:
    """Which framing the relay process runs (see pgdurable_proxy/wire/frames.py)."""
    from pgdurable_proxy.wire import frames

    # getattr: the bench also runs against checkouts from before the extension
    compiled = getattr(frames, "ACCELERATED", False) and not pure_python
    return "compiled" if compiled else "pure Python"


def _uvloop_version() -> str:
    try:
        return importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench(parse_args(argv), "passthrough", _bench, (BenchError,))


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _wait_quiet(roots: tuple[int, ...], max_wait: float) -> float:
    """Sample 1 s windows until one has less than NOISE_SHARE of a core used elsewhere."""
    waited = 0.0
    while waited < max_wait:
        if outside_cpu_s(roots, 1.0) <= NOISE_SHARE:
            return waited
        waited += 1.0
    log(f"machine not quiet after {max_wait:.0f} s; running anyway")
    return waited


def _measured_run(
    args: argparse.Namespace,
    pgbench: Path,
    ep: Endpoint,
    wl: Workload,
    rep: int,
    roots: tuple[int, ...],
) -> RunResult:
    """One matrix cell: wait for quiet, run, and re-run when outside load disturbed it."""
    limit = NOISE_SHARE * args.duration
    waited = 0.0
    for attempt in range(1, args.retries + 2):
        if args.quiet_wait > 0:
            waited += _wait_quiet(roots, args.quiet_wait)
        result = run_pgbench(
            pgbench,
            ep.port,
            BENCH_DB,
            wl,
            args.duration,
            rep=rep,
            target=ep.name,
            target_pid=ep.pid,
            roots=roots,
        )
        result.attempts, result.quiet_wait_s = attempt, waited
        if (result.other_cpu_s or 0.0) <= limit or attempt > args.retries:
            return result
        log(
            f"rep {rep} {ep.name} {wl.label}: {result.other_cpu_s} CPU-s of outside load "
            f"(limit {limit:.2f}); retrying"
        )
    raise AssertionError("unreachable")


def _bench(
    args: argparse.Namespace, workdir: Path, out_path: Path, stack: contextlib.ExitStack
) -> int:
    targets = args.targets.split(",")
    workloads = workloads_of(args)
    bindir = resolve_bindir(args.pg)
    settings = {"max_connections": "200"}
    for item in args.set:
        name, value = item.split("=", 1)
        settings[name] = value
    setup_log = workdir / "setup.log"

    log(f"PostgreSQL from {bindir}, work dir {workdir}")
    cluster: Cluster = start_cluster(bindir, workdir, settings)
    stack.callback(cluster.stop, "fast")
    log(f"cluster on port {cluster.port}; pgbench -i -s {args.scale} ...")
    init_pgbench_db(cluster, args.scale, setup_log)
    endpoints = [Endpoint("direct", cluster.port, None)] if "direct" in targets else []

    for name in ("pgdurable", "pgdurable-py"):
        if name in targets:
            pure = name == "pgdurable-py"
            proxy = start_pgdurable(cluster, workdir / f"{name}.log", pure_python=pure)
            stack.callback(proxy.stop)
            endpoints.append(Endpoint(name, proxy.port, proxy_pid(proxy)))
            log(f"{name} on port {proxy.port} (pid {proxy_pid(proxy)}, framing: {_framing(pure)})")

    if "pipe" in targets:
        pipe_port = free_port()
        pipe = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.passthrough.pipe",
                str(pipe_port),
                str(cluster.port),
            ]
        )
        stack.callback(pipe.kill)
        _wait_for_port(pipe_port)
        endpoints.append(Endpoint("pipe", pipe_port, pipe.pid))
        log(f"bare uvloop pipe on port {pipe_port} (pid {pipe.pid})")

    bouncer_version: str | None = None
    if "pgbouncer" in targets:
        binary, why = (
            (args.pgbouncer, "")
            if args.pgbouncer
            else find_or_install_pgbouncer(not args.no_install, setup_log)
        )
        if binary is None:
            print(f"SKIPPING pgbouncer: {why}", file=sys.stderr, flush=True)
        else:
            bouncer_version = tool_version(binary)
            bouncer = PgBouncer(
                binary,
                workdir / "pgbouncer",
                cluster.port,
                cluster.os_user,
                pool_size=args.pool_size,
            )
            bouncer.start(bindir / "psql")
            stack.callback(bouncer.stop)
            endpoints.append(Endpoint("pgbouncer", bouncer.port, bouncer.pid))
            log(f"{bouncer_version} on port {bouncer.port} (pid {bouncer.pid}, session mode)")

    pgbench = bindir / "pgbench"
    roots = (os.getpid(), postmaster_pid(cluster))
    meta: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "host": {
            "nproc": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "platform": platform.platform(),
        },
        "postgres": tool_version(bindir / "postgres"),
        "pgbench": tool_version(pgbench),
        "pgbouncer": bouncer_version,
        "pgbouncer_pool_size": args.pool_size if bouncer_version else None,
        "pgdurable_rev": git_rev(),
        "pgdurable_framing": _framing(False),
        "python": platform.python_version(),
        "uvloop": _uvloop_version(),
        "duration_s": args.duration,
        "repeats": args.repeats,
        "scale": args.scale,
        "pg_settings": settings,
        "targets": [e.name for e in endpoints],
        "quiet_wait_s": args.quiet_wait,
        "retries": args.retries,
        "command": " ".join(sys.argv),
    }

    if args.warmup > 0:
        log(f"warm-up: {args.warmup} s of -c 8 simple per target")
        for ep in endpoints:
            warm = run_pgbench(
                pgbench,
                ep.port,
                BENCH_DB,
                Workload(8, 2, "simple"),
                args.warmup,
                rep=0,
                target=ep.name,
                target_pid=ep.pid,
                roots=roots,
            )
            if not warm.ok:
                raise BenchError(f"warm-up against {ep.name} failed: {warm.error}")

    runs: list[RunResult] = []
    total = args.repeats * len(workloads) * len(endpoints)
    for rep in range(1, args.repeats + 1):
        # targets in reverse order every other repeat: a drift within a workload's block
        # of runs weighs on each target alike in the per-repeat ratios
        order = endpoints if rep % 2 else endpoints[::-1]
        for wl in workloads:
            for ep in order:
                result = _measured_run(args, pgbench, ep, wl, rep, roots)
                runs.append(result)
                cpu = f", {result.cpu_us_per_txn} µs/txn" if result.cpu_us_per_txn else ""
                status = f"{result.tps:,.0f} TPS{cpu}" if result.ok else f"FAILED {result.error}"
                log(
                    f"[{len(runs)}/{total}] rep {rep} {ep.name:12} {wl.label:28} {status} "
                    f"(other CPU {result.other_cpu_s} s, attempt {result.attempts})"
                )

    limit = NOISE_SHARE * args.duration
    meta["noisy_runs"] = [
        f"rep {r.rep} {r.target} -c {r.clients} {r.protocol} ({r.other_cpu_s} s)"
        for r in runs
        if (r.other_cpu_s or 0) > limit
    ]
    meta["host"]["loadavg_end"] = os.getloadavg()
    summaries = summarise(runs, workloads)
    checks = check_targets(summaries)
    report = markdown(meta, summaries, checks, workloads)
    print(report, flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": [dataclasses.asdict(r) for r in runs],
                "summary": [dataclasses.asdict(s) for s in summaries],
                "targets": [{**dataclasses.asdict(c), "verdict": c.verdict} for c in checks],
                "markdown": report,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"JSON results: {out_path}")
    return 0
