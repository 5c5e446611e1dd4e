"""Markdown tables (pgdurable next to DBOS), the two targets, and what each column counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.bench.workflows.kill_run import KillResult
from tests.bench.workflows.report_net import fmt, kill_table, link_tables, scale_tables
from tests.bench.workflows.results import RunResult
from tests.bench.workflows.workloads import HELLO_WORLD

STEPS_TARGET = 1000.0  # SQL steps/s, best pgdurable workload
HELLO_P50_TARGET_MS = 5.0  # one-step SELECT 1, one client, client-observed p50
SYSTEMS = ("pgdurable", "dbos")
TOP_STATEMENTS = 12


@dataclass(frozen=True)
class TargetCheck:
    name: str
    target: str
    measured: str
    passed: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def _pair(a: float | None, b: float | None) -> str:
    return f"{fmt(a, 2)} / {fmt(b, 2)}"


def _cpu(r: RunResult) -> str:
    c = r.cpu_ms_per_wf
    return _pair(c.get("engine"), c.get("postgres")) if c else "-"


def _costs(r: RunResult) -> str:
    """commits | round trips | statements, per SQL step."""
    return " | ".join(
        fmt(v, 2) for v in (r.commits_per_step, r.round_trips_per_step, r.statements_per_step)
    )


def _failed(r: RunResult) -> str:
    text = str(r.failed)
    if r.rows_expected is not None and r.rows_found != r.rows_expected:
        text += f" (rows {r.rows_found}/{r.rows_expected})"
    return text


def check_targets(runs: Sequence[RunResult]) -> list[TargetCheck]:
    """≥ 1,000 SQL steps/s (best pgdurable run); hello-world p50 ≤ 5 ms, one at a time."""
    ours = [r for r in runs if r.system == "pgdurable" and r.steps_per_s is not None]
    best = max(ours, key=lambda r: r.steps_per_s or 0.0, default=None)
    steps = TargetCheck(
        "SQL steps/s (best pgdurable workload)",
        f"≥ {STEPS_TARGET:,.0f}",
        f"{fmt(best.steps_per_s)} ({best.workload} {best.mode})" if best else "not measured",
        (best.steps_per_s or 0.0) >= STEPS_TARGET if best else None,
    )
    # One workflow at a time, as DBOS's 9.5 ms reference was measured: with 8 clients in a
    # closed loop the p50 is queueing (8 / throughput), which the closed-loop row reports.
    single = next(
        (
            r
            for r in ours
            if r.workload == HELLO_WORLD and r.mode == "single" and r.client_p50_ms is not None
        ),
        None,
    )
    closed = next(
        (r for r in ours if r.workload == HELLO_WORLD and r.mode == "closed"),
        None,
    )
    loaded = (
        f"; {closed.clients} clients, closed loop: {fmt(closed.client_p50_ms, 2)} ms"
        if closed
        else ""
    )
    latency = TargetCheck(
        f"hello-world ({HELLO_WORLD}) p50 start→completed, one workflow at a time",
        f"≤ {HELLO_P50_TARGET_MS:g} ms",
        f"{fmt(single.client_p50_ms, 2)} ms (server-side {fmt(single.server_p50_ms, 2)} ms{loaded})"
        if single
        else "not measured",
        (single.client_p50_ms or 0.0) <= HELLO_P50_TARGET_MS if single else None,
    )
    return [steps, latency]


def _rows_of(runs: Sequence[RunResult], mode: str) -> list[RunResult]:
    order = {s: i for i, s in enumerate(SYSTEMS)}
    workloads = list(dict.fromkeys(r.workload for r in runs))
    picked = [r for r in runs if r.mode == mode]
    return sorted(
        picked, key=lambda r: (workloads.index(r.workload), r.clients, order.get(r.system, 9))
    )


def _closed_table(runs: Sequence[RunResult], meta: dict[str, Any], mode: str, h: str) -> list[str]:
    rows = _rows_of(runs, mode)
    if not rows:
        return []
    title = (
        f"{h} Closed loop: each client starting a workflow and waiting for it, "
        f"{meta['duration_s']:g} s per run"
        if mode == "closed"
        else f"{h} One workflow at a time: 1 client, {meta['duration_s']:g} s per run"
    )
    out = [
        title,
        "",
        "| workload | clients | system | wf/s | SQL steps/s | p50 ms | p99 ms "
        "| server p50 / p99 ms | commits/step | round trips/step | stmts/step "
        "| CPU ms/wf engine / PG | failed |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.workload} | {r.clients} | {r.system} | {fmt(r.wf_per_s)} | {fmt(r.steps_per_s)} "
            f"| {fmt(r.client_p50_ms, 2)} | {fmt(r.client_p99_ms, 2)} "
            f"| {_pair(r.server_p50_ms, r.server_p99_ms)} | {_costs(r)} | {_cpu(r)} "
            f"| {_failed(r)} |"
        )
    return [*out, ""]


def _burst_table(runs: Sequence[RunResult], meta: dict[str, Any], h: str) -> list[str]:
    rows = _rows_of(runs, "burst")
    if not rows:
        return []
    out = [
        f"{h} Burst: {meta['burst']:,} starts from {rows[0].clients} clients as fast as "
        "possible, then wait for all",
        "",
        "| workload | system | starts/s | wf/s | SQL steps/s | server p50 / p99 ms "
        "| commits/step | round trips/step | stmts/step | CPU ms/wf engine / PG | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.workload} | {r.system} | {fmt(r.start_rate)} | {fmt(r.wf_per_s)} "
            f"| {fmt(r.steps_per_s)} | {_pair(r.server_p50_ms, r.server_p99_ms)} "
            f"| {_costs(r)} | {_cpu(r)} | {_failed(r)} |"
        )
    return [*out, ""]


def _ratio_table(runs: Sequence[RunResult], h: str) -> list[str]:
    by_key = {(r.system, r.workload, r.mode, r.clients): r for r in runs}
    pairs = [
        (r, by_key[("dbos", r.workload, r.mode, r.clients)])
        for r in runs
        if r.system == "pgdurable" and ("dbos", r.workload, r.mode, r.clients) in by_key
    ]
    if not pairs:
        return []
    out = [
        f"{h} pgdurable vs DBOS",
        "",
        "| workload | mode | SQL steps/s pgdurable | SQL steps/s DBOS | × | "
        "p50 ms pgdurable | p50 ms DBOS |",  # burst: server-side p50
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for ours, theirs in pairs:
        ratio = (
            f"{ours.steps_per_s / theirs.steps_per_s:.2f}"
            if ours.steps_per_s and theirs.steps_per_s
            else "-"
        )
        col = "server" if ours.mode == "burst" else "client"
        mode = f"{ours.mode} ({ours.clients})" if ours.mode == "closed" else ours.mode
        out.append(
            f"| {ours.workload} | {mode} | {fmt(ours.steps_per_s)} | {fmt(theirs.steps_per_s)} "
            f"| {ratio} | {fmt(getattr(ours, f'{col}_p50_ms'), 2)} "
            f"| {fmt(getattr(theirs, f'{col}_p50_ms'), 2)} |"
        )
    return [*out, ""]


def _statement_table(runs: Sequence[RunResult]) -> list[str]:
    """Where the statements of the hello-world closed loop go, per workflow."""
    picked = [r for r in runs if r.workload == HELLO_WORLD and r.mode == "closed"]
    picked = [r for r in picked if r.top_statements and r.workflows]
    picked = [r for r in picked if r.clients == min(p.clients for p in picked)]
    if not picked:
        return []
    out = [
        f"### Statements per {HELLO_WORLD} workflow (closed loop, pg_stat_statements)",
        "",
        "| system | database | calls/wf | kind | statement |",
        "|---|---|---:|---|---|",
    ]
    for r in picked:
        for st in r.top_statements[:TOP_STATEMENTS]:
            query = str(st["query"]).replace("|", "\\|")[:110]
            out.append(
                f"| {r.system} | {st['db']} | {st['calls'] / r.workflows:.2f} | {st['kind']} "
                f"| `{query}` |"
            )
    return [*out, ""]


def _notes(meta: dict[str, Any]) -> list[str]:
    wait = (
        f"one watcher connection polling `df.status` every {meta['poll_ms']:g} ms "
        "(so up to one poll interval plus one query late)"
        if meta["wait"] == "poll"
        else "each client's own `df.await_instance(id, …)` (whose internal sleep starts at "
        "2 ms and doubles)"
    )
    pgss = (
        "pg_stat_statements `calls` (top-level statements, BEGIN/COMMIT/SET included, a "
        "multi-statement Query counted per statement; an extended-protocol prepare round "
        "trip is not counted)"
        if meta["pg_stat_statements"]
        else "not measured (no pg_stat_statements on this PostgreSQL)"
    )
    return [
        "What is counted:",
        "",
        "* **p50/p99** (closed loop): client clock from just before `df.start` to the moment "
        f"the client learnt the workflow had completed, via {wait}. DBOS: "
        "`start_workflow(...).get_result()` in the calling thread.",
        "* **server p50/p99**: pgdurable `df.instances.created_at → completed_at`; DBOS "
        "`workflow_status.created_at → completed_at`. In a burst they include the queueing.",
        "* **burst wf/s** = completed / (last server-side completion − first start on the "
        "client clock); **starts/s** = how fast the starts alone were accepted.",
        "* **commits/step** = `pg_stat_database.xact_commit` delta of the system's databases "
        f"(pgdurable: `{meta['pgdurable_db']}`, which holds the catalog too; DBOS: "
        f"`{'` + `'.join(meta['dbos_dbs'])}`), minus the benchmark's own wait queries (one "
        "transaction each), per completed SQL step; background polling during the run and "
        "the 1.3 s settle before each snapshot is included.",
        "* **round trips/step** = TCP data segments PostgreSQL received on the cluster port "
        "(`ss -ti` data_segs_in over its established connections; every client here sends a "
        "request in one write with TCP_NODELAY, then waits), minus the wait queries, per "
        "completed SQL step. Background polling in the window is included; pgdurable's "
        "include the client's `df.start` (relayed by pgdurable). Over the latency link they "
        "are counted on the link's port, whose sockets receive what pgdurable or DBOS wrote "
        "(the link forwards one write per chunk; PostgreSQL's own count is in the JSON, "
        "`segments_in_pg`).",
        f"* **stmts/step** = {pgss} over the same databases, per completed SQL step, without "
        "the wait queries and without the foreign-key checks PostgreSQL itself runs for "
        "deferred constraints at COMMIT (recorded as top-level statements too). A "
        "multi-statement Query (asyncpg's pool reset: 4, pgdurable's step-session reset: 7) "
        "is one round trip but several statements; an empty ping (SQLAlchemy's pre-ping, "
        "which DBOS turns on) is a round trip but no statement.",
        "* **CPU ms/wf** = CPU of the engine (pgdurable: the pgdurable process, relay + engine; "
        "DBOS: its whole process, client threads included) / of all PostgreSQL processes, per "
        "completed workflow. pgdurable's bench clients' own CPU is in the JSON (`client`); "
        "with several pgdurable processes, engine is their sum; the latency link's CPU "
        "(its own process) is apart, `link`.",
        "",
    ]


_TRANSPORTS = {"tcp": "loopback TCP", "unix": "a Unix socket; round trips not counted"}


def _details(meta: dict[str, Any], runs: Sequence[RunResult]) -> list[str]:
    """The tables of each link setting (one pgdurable process), under a heading of their
    own when there is a link."""
    rtts = meta.get("rtt_ms") or [0.0]
    out: list[str] = []
    for rtt in rtts:
        picked = [r for r in runs if r.rtt_ms == rtt and r.processes == 1]
        h = "###"
        if len(rtts) > 1 or rtt:
            where = f"Over the latency link, rtt {rtt:g} ms" if rtt else "Loopback, no link"
            out += [f"### {where}", ""]
            h = "####"
        out += [
            *_closed_table(picked, meta, "closed", h),
            *_burst_table(picked, meta, h),
            *_closed_table(picked, meta, "single", h),
            *_ratio_table(picked, h),
        ]
    return out


def markdown(
    meta: dict[str, Any],
    runs: Sequence[RunResult],
    checks: Sequence[TargetCheck],
    kills: Sequence[KillResult] = (),
) -> str:
    """The whole report."""
    rtts = [r for r in meta.get("rtt_ms", []) if r]
    link = f", and through the latency link at rtt {', '.join(f'{r:g}' for r in rtts)} ms"
    lines = [
        "## Workflow benchmark: pgdurable vs DBOS Transact",
        "",
        f"{meta['started']}, {meta['postgres']} (fsync on, max_connections=300, reached over "
        f"{_TRANSPORTS[meta.get('transport', 'tcp')]}{link if rtts else ''}), "
        f"{meta['host']['nproc']} CPUs (load {meta['host']['loadavg_start'][0]:.2f} at start), "
        f"pgdurable {meta['pgdurable_rev']} (`{' '.join(meta['pgdurable_args'])}`), "
        f"DBOS {meta['dbos'] or 'not run'}; Python {meta['python']}.",
        "",
        *_details(meta, runs),
        *link_tables(meta, runs),
        *scale_tables(meta, runs),
        *kill_table(kills),
        "### Targets",
        "",
        "| target | goal | measured | verdict |",
        "|---|---|---|---|",
        *[f"| {c.name} | {c.target} | {c.measured} | **{c.verdict}** |" for c in checks],
        "",
        *_notes(meta),
        *_statement_table(
            [r for r in runs if r.rtt_ms == min(meta.get("rtt_ms") or [0.0]) and r.processes == 1]
        ),
    ]
    if meta.get("other_cpu_s_max", 0) > 0.5:
        lines.append(
            f"Note: up to {meta['other_cpu_s_max']:.1f} CPU-s were used outside the benchmark "
            "during a run (other work on the machine); treat those numbers with care."
        )
    problems = meta.get("problems") or []
    if problems:
        lines += ["", "### Problems seen", ""]
        lines += [f"  * {p.strip()}" if p.startswith("  ") else f"* {p}" for p in problems]
    return "\n".join(lines) + "\n"
