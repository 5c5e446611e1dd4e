"""The workflow benchmark's servers: one PostgreSQL cluster, pgdurable, and DBOS's install."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import psycopg

from pgdurable_proxy.cluster import Cluster
from tests.bench.passthrough.servers import BenchError, start_cluster
from tests.bench.workflows.workloads import EVENTS_DDL, EVENTS_TABLE
from tests.support.proxy import ProxyProcess

BENCH_DB = "bench"  # pgdurable's catalog and the workflows' own tables
BENCH_ROLE = "bench"  # the non-superuser LOGIN role that owns the workflows
DBOS_SYS_DB = "dbos_sys"
DBOS_APP_DB = "dbos_app"
DBOS_REQUIREMENT = "dbos>=3,<4"


def pgss_available(bindir: Path) -> bool:
    """True when the cluster's binaries ship pg_stat_statements (Debian 15 and the wheel do)."""
    return (bindir.parent / "lib" / "pg_stat_statements.so").exists()


def start_bench_cluster(bindir: Path, workdir: Path, pgss: bool, sockets: Path | None) -> Cluster:
    """initdb + start: defaults, max_connections=300 (64 clients relayed by 4 pgdurable
    processes of 32 step connections each fit), pg_stat_statements preloaded if asked,
    and a Unix socket in `sockets` when given."""
    settings = {"max_connections": "300"}
    if sockets is not None:
        sockets.mkdir(exist_ok=True)
        sockets.chmod(0o777)  # the server may run as another OS user
        settings["unix_socket_directories"] = str(sockets)
    if pgss:
        settings["shared_preload_libraries"] = "pg_stat_statements"
    try:
        return start_cluster(bindir, workdir, settings)
    except Exception as exc:
        raise BenchError(f"could not start PostgreSQL from {bindir}: {exc}") from exc


def prepare_databases(cluster: Cluster, pgss: bool) -> None:
    """The bench role and databases, each with the events table the INSERT steps fill."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {BENCH_ROLE} LOGIN")
        for db in (BENCH_DB, DBOS_SYS_DB, DBOS_APP_DB):
            conn.execute(f"CREATE DATABASE {db}")
        if pgss:
            conn.execute("CREATE EXTENSION pg_stat_statements")
    for db in (BENCH_DB, DBOS_APP_DB):
        with psycopg.connect(cluster.dsn(dbname=db), autocommit=True) as conn:
            conn.execute(EVENTS_DDL)
            conn.execute(f"GRANT SELECT, INSERT ON {EVENTS_TABLE} TO {BENCH_ROLE}")
            conn.execute(f"GRANT USAGE ON SEQUENCE {EVENTS_TABLE}_id_seq TO {BENCH_ROLE}")


def system_dsn(
    cluster: Cluster, dbname: str, sockets: Path | None, link_port: int | None = None
) -> str:
    """How the systems under test reach PostgreSQL: loopback TCP, the Unix socket, or the
    latency link listening on link_port."""
    if link_port is not None:
        return f"postgresql://postgres@{cluster.host}:{link_port}/{dbname}"
    return cluster.dsn(dbname=dbname) if sockets is None else cluster.socket_dsn(dbname=dbname)


def start_pgdurable(upstream: str, log: Path, extra_args: list[str]) -> ProxyProcess:
    """`python -m pgdurable_proxy --upstream .../bench`, then df.grant_usage for the role.
    Without retention passes (`--reconcile-interval 0`, unless extra_args say otherwise):
    each process's first pass, at its start, would prune the instances earlier runs left
    beyond the 10,000 kept, inside the next measured window (the runs with more processes
    come later and would pay for it)."""
    proxy = ProxyProcess(
        upstream=upstream,
        extra_args=["--log-level", "warning", "--reconcile-interval", "0", *extra_args],
        log_path=log,
    )
    try:
        proxy.start(timeout=60)
    except (RuntimeError, TimeoutError) as exc:
        if proxy.process is not None and proxy.process.poll() is None:
            proxy.kill()
        raise BenchError(f"pgdurable did not start: {exc}; see {log}") from exc
    try:
        with psycopg.connect(proxy.dsn(dbname=BENCH_DB), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage(%s)", (BENCH_ROLE,))
    except psycopg.Error as exc:
        proxy.stop()
        raise BenchError(f"df.grant_usage through pgdurable failed: {exc}") from exc
    return proxy


def proxy_pid(proxy: ProxyProcess) -> int:
    assert proxy.process is not None
    return proxy.process.pid


# Expected, and at WARNING level in versions before routine start-up and shutdown lines
# moved to info: the catalog install, the SIGTERM we sent.
EXPECTED_LOG_EVENTS = ("event=migrate ", "event=shutting_down ")


def log_problems(log: Path, limit: int = 20) -> tuple[int, list[str]]:
    """Unexpected warning/error lines pgdurable logged (count, first `limit`)."""
    if not log.exists():
        return 0, []
    lines = [
        line.rstrip()
        for line in log.read_text(errors="replace").splitlines()
        if any(word in line.lower() for word in ("warning", "error", "traceback", "exception"))
        and not any(event in line for event in EXPECTED_LOG_EVENTS)
    ]
    return len(lines), lines[:limit]


def dbos_version() -> str | None:
    try:
        return importlib.metadata.version("dbos")
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_dbos(log: Path) -> tuple[str | None, str]:
    """DBOS Transact 3.x in this venv (pip-installing it when missing): (version, why not)."""
    version = dbos_version()
    if version is not None and version.startswith("3."):
        return version, ""
    print(f"installing {DBOS_REQUIREMENT} with pip ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", DBOS_REQUIREMENT]
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=600).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    importlib.invalidate_caches()
    version = dbos_version()
    if rc != 0 or version is None or not version.startswith("3."):
        return None, f"`{' '.join(cmd)}` failed (rc={rc}, dbos {version}); see {log}"
    return version, ""
