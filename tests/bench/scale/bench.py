"""Orchestration: cluster, pgdurable, empty-catalog figures, bulk load, loaded figures,
then a retention pass with df.start running beside it."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.bench.harness import git_rev, log, run_bench
from tests.bench.passthrough.servers import BenchError, resolve_bindir, tool_version
from tests.bench.scale.load import bulk_load, loaded_completed, loaded_id
from tests.bench.scale.measure import hello_world, measure_all
from tests.bench.scale.report import markdown
from tests.bench.scale.retention import probe_starts, split
from tests.bench.scale.waits import WaitSampler
from tests.bench.workflows.servers import (
    BENCH_DB,
    BENCH_ROLE,
    prepare_databases,
    start_bench_cluster,
)
from tests.support.proxy import ProxyProcess

RETENTION_DAYS = 30


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.scale",
        description="pgdurable's everyday calls on an empty catalog and on one with a million "
        "finished instances; a retention pass beside df.start.",
    )
    p.add_argument("--instances", type=int, default=1_000_000, help="finished instances loaded")
    p.add_argument("--reps", type=int, default=200, help="calls per operation and phase (200)")
    p.add_argument("--poll-ms", type=float, default=1.0, help="df.status poll of hello world")
    p.add_argument("--start-every-ms", type=float, default=20.0, help="df.start probe period")
    p.add_argument("--pg", default="auto", help="auto (Debian 15, else wheel 18), 15, 18, bin dir")
    p.add_argument("--out", type=Path, help="JSON results (default /tmp/pgdurable-bench-scale-*)")
    p.add_argument("--workdir", type=Path, help="cluster data and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data and logs)")
    args = p.parse_args(argv)
    if args.instances < 1000 or args.reps < 10:
        p.error("--instances must be at least 1000 and --reps at least 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench(parse_args(argv), "scale", _bench, (BenchError, RuntimeError))


def _start_pgdurable(cluster: Cluster, log_path: Path, retention: list[str]) -> ProxyProcess:
    proxy = ProxyProcess(
        upstream=cluster.dsn(dbname=BENCH_DB), extra_args=retention, log_path=log_path
    )
    try:
        proxy.start(timeout=60)
    except (RuntimeError, TimeoutError) as exc:
        proxy.kill()
        raise BenchError(f"pgdurable did not start: {exc}; see {log_path}") from exc
    return proxy


def _log_lock_waits(cluster: Cluster, server_log: Path) -> int:
    """Have PostgreSQL log every lock wait over 10 ms; where its log stands now."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_lock_waits = on")
        conn.execute("ALTER SYSTEM SET deadlock_timeout = '10ms'")
        conn.execute("SELECT pg_reload_conf()")
    return server_log.stat().st_size if server_log.exists() else 0


def _lock_waits_since(server_log: Path, offset: int) -> list[str]:
    """PostgreSQL's 'still waiting for ... lock' lines written after `offset`."""
    with open(server_log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if "still waiting for" in line]


def _bench(
    args: argparse.Namespace, workdir: Path, out_path: Path, stack: contextlib.ExitStack
) -> int:
    bindir = resolve_bindir(args.pg)
    log(f"PostgreSQL from {bindir}, work dir {workdir}")
    cluster = start_bench_cluster(bindir, workdir, pgss=False, sockets=None)
    stack.callback(cluster.stop, "fast")
    prepare_databases(cluster, pgss=False)
    proxy_log = workdir / "pgdurable.log"
    proxy = _start_pgdurable(cluster, proxy_log, ["--reconcile-interval", "0"])
    with psycopg.connect(proxy.dsn(dbname=BENCH_DB), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s)", (BENCH_ROLE,))
    client_dsn = proxy.dsn(user=BENCH_ROLE, dbname=BENCH_DB)
    metrics_url = f"http://127.0.0.1:{proxy.http_port}/metrics"
    poll_s = args.poll_ms / 1000
    with psycopg.connect(client_dsn, autocommit=True, prepare_threshold=None) as conn:
        hello_ids = [hello_world(conn, poll_s) for _ in range(60)]  # a first page's worth
    log(f"empty catalog ({len(hello_ids)} hello worlds): {args.reps} calls per operation")
    empty = measure_all(client_dsn, metrics_url, (hello_ids, hello_ids), args.reps, poll_s)

    log(f"bulk load of {args.instances:,} finished instances")
    load_s = bulk_load(cluster.dsn(dbname=BENCH_DB), hello_ids[0], args.instances, log)
    rng = random.Random(17)
    sample = [
        n for n in rng.sample(range(1, args.instances + 1), 4 * args.reps) if loaded_completed(n)
    ][: args.reps]
    log(f"loaded in {load_s:.0f} s; {args.reps} calls per operation again")
    spread = [loaded_id(n) for n in sample]
    loaded = measure_all(client_dsn, metrics_url, (spread, hello_ids), args.reps, poll_s)
    proxy.stop()

    retention = [
        "--reconcile-interval",
        "1",
        "--retention-days",
        str(RETENTION_DAYS),
        "--retention-max-instances",
        "0",
    ]
    log(f"pgdurable again with {' '.join(retention)}; df.start every {args.start_every_ms} ms")
    server_log = cluster.datadir / "server.log"
    log_from = _log_lock_waits(cluster, server_log)
    proxy = _start_pgdurable(cluster, proxy_log, retention)
    stack.callback(proxy.stop)
    with WaitSampler(cluster.dsn(dbname=BENCH_DB), BENCH_ROLE) as waits:
        calls, pruned = probe_starts(
            proxy.dsn(user=BENCH_ROLE, dbname=BENCH_DB),
            proxy_log,
            args.start_every_ms / 1000,
            timeout_s=1800,
        )
    with psycopg.connect(cluster.dsn(dbname=BENCH_DB)) as conn:
        row = conn.execute("SELECT count(*) FROM df.instances").fetchone()
    left = int(row[0]) if row else -1
    lock_waits = _lock_waits_since(server_log, log_from)
    meta = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "postgres": tool_version(bindir / "postgres"),
        "pgdurable_rev": git_rev(),
        "instances": args.instances,
        "load_seconds": round(load_s, 1),
        "reps": args.reps,
        "retention_args": " ".join(retention),
        "instances_left": left,
        "lock_waits_over_10ms": len(lock_waits),
        "lock_wait_lines": lock_waits[:10],
        "wait_samples": waits.samples,
        "df_start_waits": waits.top(),
        "command": " ".join(sys.argv),
    }
    during, others = split(calls, pruned)
    report = markdown(meta, empty, loaded, (during, others), pruned)
    print(report, flush=True)
    out_path.write_text(
        json.dumps(
            {
                "meta": meta,
                "empty": {k: dataclasses.asdict(v) for k, v in empty.items()},
                "loaded": {k: dataclasses.asdict(v) for k, v in loaded.items()},
                "starts_during_pass": dataclasses.asdict(during),
                "starts_outside_pass": dataclasses.asdict(others),
                "retention_pass": dataclasses.asdict(pruned),
                "markdown": report,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"JSON results: {out_path}")
    return 0
