"""The DBOS runs of one link setting, in a child Python process (dbos_runner.py) that is
always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.harness import REPO, log
from tests.bench.workflows.results import RunResult
from tests.bench.workflows.workloads import runs_of


@dataclass(frozen=True)
class DbosRuns:
    """What the child runs and where: its config file is written from this."""

    sys_url: str
    app_url: str
    stats_dsn: str
    databases: list[str]
    pgss: bool
    workloads: list[str]
    modes: list[str]
    clients: list[int]
    duration_s: float
    burst: int
    warmup_s: float
    postmaster_pid: int
    port: int | None  # where round trips are counted (PostgreSQL's, or the link's)
    pg_port: int | None  # PostgreSQL's, behind a link
    link_pid: int | None
    rtt_ms: float


def run_dbos(
    runs: DbosRuns, workdir: Path, stack: contextlib.ExitStack, problems: list[str]
) -> list[RunResult]:
    """Run the child; its results (those it finished, if it failed)."""
    config: dict[str, Any] = {**runs.__dict__, "bench_pid": os.getpid()}
    tag = f"{runs.rtt_ms:g}"
    cfg_path = workdir / f"dbos_config-{tag}.json"
    out_path = workdir / f"dbos_results-{tag}.json"
    cfg_path.write_text(json.dumps(config))
    log("DBOS Transact runs (own process)" + (f", rtt {tag} ms" if runs.rtt_ms else ""))
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
    count = len(runs_of(runs.workloads, runs.modes, runs.clients))
    per_run = (runs.duration_s + runs.burst / 20 + 30) * (1 + runs.rtt_ms / 10)
    try:
        rc = child.wait(count * per_run + 120)
    except subprocess.TimeoutExpired:
        stop_child()
        rc = -1
    if rc != 0:
        problems.append(f"DBOS runner exited with {rc}; its results may be incomplete")
    if not out_path.exists():
        return []
    return [RunResult(**row) for row in json.loads(out_path.read_text())]
