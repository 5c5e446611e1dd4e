"""DBOS Transact 3.x side of the workflow benchmark, run in its own Python process.

    python -m tests.bench.workflows.dbos_runner CONFIG.json RESULTS.json

Set up as in shared/research/baseline_bench.md §4: DBOSConfig with sys_db_pool_size=32 and
log_level WARNING; a SQLAlchemyDatasource (pool_size 32) on the app database whose
@ds.transaction steps run SELECT 1 or an INSERT (default isolation: SERIALIZABLE); workflows
of 1 or 3 such steps. "closed" = `clients` threads each doing start_workflow + get_result in
a loop; "burst" = `count` start_workflow calls from `clients` threads, then every handle's
get_result. Results (RunResult rows) are written as JSON.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.bench.workflows.results import RunResult, Sample, fill
from tests.bench.workflows.stats import CpuProbe, StatsReader
from tests.bench.workflows.window import Window
from tests.bench.workflows.workloads import EVENTS_TABLE, WORKLOADS, Workload, runs_of

STATUS_SQL = (
    "SELECT workflow_uuid, status, created_at, coalesce(completed_at, updated_at) "
    "FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)"
)
DBOS_STATUS = {"SUCCESS": "completed", "ERROR": "failed", "CANCELLED": "cancelled"}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] dbos: {msg}", file=sys.stderr, flush=True)


def _define(app_url: str) -> dict[str, Callable[[], Any]]:
    """Register the steps and workflows (before DBOS.launch)."""
    import sqlalchemy as sa
    from dbos import DBOS, SQLAlchemyDatasource

    ds = SQLAlchemyDatasource.create(app_url, engine_kwargs={"pool_size": 32})
    select_sql = sa.text("SELECT 1")
    insert_sql = sa.text(f"INSERT INTO {EVENTS_TABLE} (step) VALUES (:n)")

    @ds.transaction()
    def select_step() -> int:
        return int(ds.sql_session().execute(select_sql).scalar_one())

    @ds.transaction()
    def insert_step(n: int) -> None:
        ds.sql_session().execute(insert_sql, {"n": n})

    @DBOS.workflow()
    def select1() -> None:
        select_step()

    @DBOS.workflow()
    def select3() -> None:
        select_step()
        select_step()
        select_step()

    @DBOS.workflow()
    def insert1() -> None:
        insert_step(1)

    @DBOS.workflow()
    def insert3() -> None:
        insert_step(1)
        insert_step(2)
        insert_step(3)

    return {"select1": select1, "select3": select3, "insert1": insert1, "insert3": insert3}


Record = tuple[str, float, float, str]  # workflow id, started wall, client seconds, status


def _closed(wf: Callable[[], Any], clients: int, duration_s: float) -> tuple[list[Record], float]:
    from dbos import DBOS

    records: list[Record] = []
    errors: list[str] = []
    deadline = time.perf_counter() + duration_s

    def client() -> None:
        while time.perf_counter() < deadline and len(errors) < 5:
            wall, t0 = time.time(), time.perf_counter()
            try:
                handle = DBOS.start_workflow(wf)
                handle.get_result()
            except Exception as exc:
                errors.append(repr(exc))
                continue
            records.append((handle.get_workflow_id(), wall, time.perf_counter() - t0, "ok"))

    begin = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        _log(f"errors: {errors[:3]}")
    return records, time.perf_counter() - begin


def _burst(wf: Callable[[], Any], clients: int, count: int) -> tuple[list[Record], float]:
    from dbos import DBOS

    tickets = itertools.count()
    started: list[tuple[Any, float]] = []

    def client() -> None:
        while next(tickets) < count:
            wall = time.time()
            started.append((DBOS.start_workflow(wf), wall))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start_phase = time.perf_counter() - begin
    records: list[Record] = []
    for handle, wall in started:
        try:
            handle.get_result()
            status = "ok"
        except Exception as exc:
            status = f"error: {exc!r}"[:200]
        records.append((handle.get_workflow_id(), wall, 0.0, status))
    return records, start_phase


def _samples(cfg: dict[str, Any], records: list[Record], mode: str) -> list[Sample]:
    """Join the client's records with workflow_status (server-side times, in ms)."""
    with psycopg.connect(cfg["sys_url"], autocommit=True) as conn:
        rows = conn.execute(STATUS_SQL, ([r[0] for r in records],)).fetchall()
    server = {wid: (status, created, done) for wid, status, created, done in rows}
    samples = []
    for wid, wall, client_s, client_status in records:
        status, created, done = server.get(wid, ("missing", None, None))
        ok = DBOS_STATUS.get(status, status.lower()) if client_status == "ok" else client_status
        has_times = created is not None and done is not None
        samples.append(
            Sample(
                status=ok,
                started_wall=wall,
                client_s=None if mode == "burst" else client_s,
                server_s=(done - created) / 1000 if has_times else None,
                completed_wall=done / 1000 if done is not None else None,
            )
        )
    return samples


def _rows(cfg: dict[str, Any]) -> int:
    with psycopg.connect(cfg["app_url"], autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
    return int(row[0]) if row else 0


def _run(
    cfg: dict[str, Any],
    wl: Workload,
    wf: Callable[[], Any],
    run: tuple[str, int],
    window: Window,
) -> RunResult:
    mode, clients = run
    result = RunResult("dbos", wl.name, mode, clients, wl.steps, rtt_ms=cfg["rtt_ms"])
    rows_before = _rows(cfg)
    window.open()  # DBOS keeps its pooled connections open: all round trips are seen
    if mode in ("closed", "single"):
        records, wall = _closed(wf, clients, cfg["duration_s"])
    else:
        records, wall = _burst(wf, clients, cfg["burst"])
    window.stop_cpu()
    measured = window.close()
    samples = _samples(cfg, records, mode)
    if mode == "burst":
        first = min((s.started_wall for s in samples), default=0.0)
        last = max((s.completed_wall or 0.0 for s in samples), default=0.0)
        result.start_rate = round(len(records) / wall, 1) if wall > 0 else None
        wall = last - first
    fill(result, samples, wall, measured)
    if wl.insert:
        result.rows_expected = result.workflows * wl.rows_per_workflow
        result.rows_found = _rows(cfg) - rows_before
    bad = [f"{r[0]}: {r[3]}" for r in records if r[3] != "ok"]
    result.errors = bad[:5]
    return result


def main(argv: list[str]) -> int:
    cfg: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    out_path = Path(argv[1])
    from dbos import DBOS, DBOSConfig

    config: DBOSConfig = {
        "name": "pgdurablebench",
        "system_database_url": cfg["sys_url"],
        "sys_db_pool_size": 32,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    workflows = _define(cfg["app_url"])
    DBOS.launch()
    results: list[RunResult] = []
    reader = StatsReader(cfg["stats_dsn"], cfg["databases"], cfg["pgss"])
    watch: dict[str, tuple[int | tuple[int, ...], bool]] = {
        "engine": (os.getpid(), False),
        "postgres": (cfg["postmaster_pid"], True),
    }
    if cfg.get("link_pid"):
        watch["link"] = (cfg["link_pid"], False)
    cpu = CpuProbe(watch, roots=(cfg["bench_pid"], cfg["postmaster_pid"]))
    window = Window(reader, cpu, cfg["port"], cfg.get("pg_port"))
    try:
        if cfg["warmup_s"] > 0:
            _log(f"warm-up {cfg['warmup_s']} s")
            _closed(workflows["select1"], cfg["clients"][0], cfg["warmup_s"])
        for name, mode, clients in runs_of(cfg["workloads"], cfg["modes"], cfg["clients"]):
            result = _run(cfg, WORKLOADS[name], workflows[name], (mode, clients), window)
            results.append(result)
            _log(
                f"{result.label}: {result.wf_per_s} wf/s, {result.steps_per_s} steps/s, "
                f"p50 {result.client_p50_ms or result.server_p50_ms} ms, "
                f"failed {result.failed}"
            )
            out_path.write_text(json.dumps([dataclasses.asdict(r) for r in results]))
    except KeyboardInterrupt:
        os._exit(130)  # Ctrl-C: no orderly DBOS shutdown (its threads would log tracebacks)
    finally:
        reader.close()
        DBOS.destroy(workflow_completion_timeout_sec=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
