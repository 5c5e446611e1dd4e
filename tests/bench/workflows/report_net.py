"""The report's tables across link settings and process counts: hello world and throughput
per rtt beside DBOS, scale-out against one process, and the crash run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.bench.workflows.kill_run import KillResult
from tests.bench.workflows.results import RunResult
from tests.bench.workflows.workloads import HELLO_WORLD


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _find(runs: Sequence[RunResult], **match: Any) -> RunResult | None:
    return next((r for r in runs if all(getattr(r, k) == v for k, v in match.items())), None)


def _late(meta: dict[str, Any], rtt: float) -> str:
    """How late the link released chunks, on average, up / down (ms)."""
    stats = (meta.get("links") or {}).get(f"{rtt:g}")
    if not rtt or not stats:
        return "-"
    mean = [stats[d]["late_ms_sum"] / max(stats[d]["chunks"], 1) for d in ("up", "down")]
    return f"{mean[0]:.2f} / {mean[1]:.2f}"


def _hello(meta: dict[str, Any], runs: Sequence[RunResult]) -> list[str]:
    out = [
        f"### Hello world over the link ({HELLO_WORLD}, one workflow at a time)",
        "",
        "| rtt ms | link late ms up / down | pgdurable p50 ms (server) | pgdurable round "
        "trips/step | DBOS p50 ms (server) | DBOS round trips/step | pgdurable first steps "
        "promoted |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rtt in meta["rtt_ms"]:
        cells = []
        for system in ("pgdurable", "dbos"):
            r = _find(runs, system=system, workload=HELLO_WORLD, mode="single", rtt_ms=rtt)
            r = r if r is not None and r.processes == 1 else None
            cells += [
                f"{fmt(r.client_p50_ms, 2)} ({fmt(r.server_p50_ms, 2)})" if r else "-",
                fmt(r.round_trips_per_step, 2) if r else "-",
            ]
        ours = _find(runs, system="pgdurable", workload=HELLO_WORLD, mode="single", rtt_ms=rtt)
        promoted = "-"
        if ours is not None and ours.engine_paths:
            promoted = f"{ours.engine_paths.get('first_steps_promoted', 0)} of {ours.workflows}"
        out.append(f"| {rtt:g} | {_late(meta, rtt)} | {' | '.join(cells)} | {promoted} |")
    return [*out, ""]


def _throughput(meta: dict[str, Any], runs: Sequence[RunResult]) -> list[str]:
    clients = meta["clients"]
    by = " / ".join(str(c) for c in clients)
    out = [
        "### Throughput over the link (closed loop)",
        "",
        f"| rtt ms | workload | pgdurable SQL steps/s at {by} clients | DBOS at {by} "
        f"| pgdurable round trips/step at {by} | DBOS round trips/step "
        "| open transactions step / engine, pgdurable · DBOS (most clients) "
        "| link CPU ms/wf pgdurable / DBOS (most clients) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rtt in meta["rtt_ms"]:
        for workload in meta["workloads"]:
            cols: dict[str, list[RunResult | None]] = {}
            for system in ("pgdurable", "dbos"):
                cols[system] = [
                    _find(
                        runs,
                        system=system,
                        workload=workload,
                        mode="closed",
                        rtt_ms=rtt,
                        clients=c,
                        processes=1,
                    )
                    for c in clients
                ]
            if not any(cols["pgdurable"] + cols["dbos"]):
                continue
            steps = {s: " / ".join(fmt(r and r.steps_per_s) for r in v) for s, v in cols.items()}
            trips = {
                s: " / ".join(fmt(r and r.round_trips_per_step, 2) for r in v)
                for s, v in cols.items()
            }
            link = " / ".join(
                fmt(v[-1].cpu_ms_per_wf.get("link"), 2) if v[-1] else "-" for v in cols.values()
            )
            out.append(
                f"| {rtt:g} | {workload} | {steps['pgdurable']} | {steps['dbos']} "
                f"| {trips['pgdurable']} | {trips['dbos']} "
                f"| {' · '.join(_open(v[-1]) for v in cols.values())} | {link} |"
            )
    return [*out, ""]


def _open(r: RunResult | None) -> str:
    """Mean open transactions of steps / of the engine's own bookkeeping."""
    if r is None or not r.in_flight:
        return "-"
    return f"{r.in_flight.get('step', 0):.1f} / {r.in_flight.get('engine', 0):.1f}"


def link_tables(meta: dict[str, Any], runs: Sequence[RunResult]) -> list[str]:
    """Hello world and throughput per rtt, pgdurable beside DBOS (when a link was used)."""
    if not any(meta.get("rtt_ms", [])):
        return []
    return [*_hello(meta, runs), *_throughput(meta, runs)]


def _spread(r: RunResult | None) -> str:
    if r is None or not r.steps_by_process:
        return "-"
    known = [n for n in r.steps_by_process if n is not None]
    total = sum(known) or 1
    return " / ".join("-" if n is None else f"{100 * n / total:.0f}%" for n in r.steps_by_process)


def _completed(r: RunResult) -> int:
    return sum(n or 0 for n in r.steps_by_process)


def _exact(rs: Sequence[RunResult | None]) -> str:
    """Exactly once over all process counts: rows inserted = rows expected, and the SQL steps
    the processes' /metrics say they completed = the completed workflows' steps."""
    found = [r for r in rs if r is not None]
    steps = [r for r in found if r.steps_by_process and None not in r.steps_by_process]
    rows = [r for r in found if r.rows_expected is not None]
    twice = [r for r in steps if _completed(r) != r.workflows * r.steps_per_workflow]
    bad_rows = [r for r in rows if r.rows_found != r.rows_expected]
    if twice or bad_rows:
        return "NO: " + ", ".join(
            [f"{r.processes}: {r.rows_found}/{r.rows_expected} rows" for r in bad_rows]
            + [f"{r.processes}: {_completed(r)} steps" for r in twice]
        )
    total = sum(r.workflows * r.steps_per_workflow for r in steps)
    text = f"yes: {total:,} steps" if steps else "n/a"
    if rows:
        text += f", {sum(r.rows_found or 0 for r in rows):,} rows"
    return text


def _cpu(r: RunResult | None) -> str:
    """The CPU of every pgdurable process and of PostgreSQL per workflow, e.g. `0.9+2.9`."""
    if r is None or not r.cpu_ms_per_wf:
        return "-"
    cpu = r.cpu_ms_per_wf
    return f"{cpu.get('engine', 0):.1f}+{cpu.get('postgres', 0):.1f}"


def _lock_share(r: RunResult | None) -> str:
    """Of the transactions open in the samples (activity.py), the share waiting for a lock."""
    if r is None or not r.in_flight:
        return "-"
    open_ = sum(r.in_flight.get(k, 0) for k in ("step", "engine", "client"))
    return f"{100 * r.in_flight.get('lock', 0) / open_:.0f} %" if open_ else "-"


def scale_tables(meta: dict[str, Any], runs: Sequence[RunResult]) -> list[str]:
    """Throughput of N processes against one, measured in the same run; claims' spread."""
    counts = meta.get("processes") or [1]
    if len(counts) < 2:
        return []
    heads = " | ".join(f"{n} proc. steps/s (×)" for n in counts)
    out = [
        "### Scale-out: pgdurable processes on one database, clients spread round-robin",
        "",
        f"| rtt ms | workload | mode | clients | {heads} | round trips/step "
        f"({' / '.join(map(str, counts))}) | CPU ms/wf pgdurable + PostgreSQL "
        f"({' / '.join(map(str, counts))}) | open transactions waiting for a lock "
        f"({' / '.join(map(str, counts))}) | completed steps per process ({counts[-1]}) "
        "| exactly once (steps completed by all processes, rows) |",
        "|---:|---|---|---:|" + "---:|" * len(counts) + "---:|---:|---:|---|---|",
    ]
    keys = dict.fromkeys(
        (r.rtt_ms, r.workload, r.mode, r.clients) for r in runs if r.system == "pgdurable"
    )
    for rtt, workload, mode, clients in keys:
        found = [
            _find(
                runs,
                system="pgdurable",
                rtt_ms=rtt,
                workload=workload,
                mode=mode,
                clients=clients,
                processes=n,
            )
            for n in counts
        ]
        one = found[0].steps_per_s if found[0] else None
        cells = [
            "-"
            if r is None
            else fmt(r.steps_per_s)
            + (f" ({r.steps_per_s / one:.2f})" if one and r.steps_per_s else "")
            for r in found
        ]
        trips = " / ".join(fmt(r and r.round_trips_per_step, 2) for r in found)
        cpu = " / ".join(_cpu(r) for r in found)
        locks = " / ".join(_lock_share(r) for r in found)
        out.append(
            f"| {rtt:g} | {workload} | {mode} | {clients} | {' | '.join(cells)} | {trips} "
            f"| {cpu} | {locks} | {_spread(found[-1])} | {_exact(found)} |"
        )
    return [*out, ""]


def kill_table(kills: Sequence[KillResult]) -> list[str]:
    """The crash runs: how long the killed process's instances waited, against its lease
    (the recoveries column lists the processes that lived on)."""
    if not kills:
        return []
    out = [
        "### A process SIGKILLed mid-burst (clients straight to PostgreSQL)",
        "",
        "| rtt ms | processes | workload | completed / started | lease s | its leased "
        "instances at the kill (longest lease left, s) | they finished after the kill, s "
        "p50 / max | every unfinished instance finished after, s (of n) | lease recoveries "
        "per survivor | rows exactly once |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for k in kills:
        rows = "n/a"
        if k.rows_expected is not None:
            ok = k.rows_found == k.rows_expected
            rows = f"{'yes' if ok else 'NO'} ({k.rows_found}/{k.rows_expected})"
        out.append(
            f"| {k.rtt_ms:g} | {k.processes} | {k.workload} | {k.completed:,} / {k.started:,} "
            f"| {k.lease_seconds:g} | {k.leased_at_kill} ({fmt(k.lease_left_max_s, 2)}) "
            f"| {fmt(k.leased_done_p50_s, 2)} / {fmt(k.leased_done_max_s, 2)} "
            f"| {fmt(k.unfinished_done_max_s, 2)} ({k.unfinished_at_kill}) "
            f"| {' / '.join(fmt(n) for n in k.recoveries[:-1])} | {rows} |"
        )
    return [*out, ""]
