"""A cluster as managed services hand it out: scram-sha-256 for every connection, and no
superuser for pgdurable or its users. pgdurable's admin is `postgres`, an ordinary role with
CREATEROLE and CREATEDB that owns database `postgres`; the real superuser exists only to
build the fixture."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgdurable_proxy.cluster import Cluster, free_port
from tests.support.clusters import TEST_SETTINGS, Flavor, run_psql

ROOT, ROOT_PASSWORD = "cluster_root", "root-secret"
ADMIN, ADMIN_PASSWORD = "postgres", "admin-secret"
SECRET = "a runner secret that only pgdurable knows"
SCRAM_EVERYWHERE = [
    "local all all scram-sha-256",
    "host all all 127.0.0.1/32 scram-sha-256",
    "host all all ::1/128 scram-sha-256",
]


def user_password(user: str) -> str:
    """Every fixture login has a password; this is it."""
    return {ROOT: ROOT_PASSWORD, ADMIN: ADMIN_PASSWORD}.get(user, f"{user}-password")


@dataclass
class ManagedCluster:
    """The cluster plus the client-side files that make logging in work (a passfile)."""

    cluster: Cluster
    passfile: Path
    secret_file: Path

    def dsn(self, user: str = ADMIN, dbname: str = "postgres") -> str:
        """A direct URI with the user's password."""
        return self.cluster.dsn(user, dbname, user_password(user))

    def proxy_upstream(self) -> str:
        """pgdurable's --upstream: the non-superuser admin, with its password."""
        return self.dsn(ADMIN)

    def psql_env(self) -> dict[str, str]:
        """Environment for psql: passwords come from the passfile, for any port."""
        return {**os.environ, "PGPASSFILE": str(self.passfile)}

    def create_user(self, name: str, *grants: str) -> None:
        """A LOGIN role created by the admin (so the admin holds ADMIN OPTION on it)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{user_password(name)}'")
            for grant in grants:
                conn.execute(grant)
        with self.passfile.open("a") as passfile:
            passfile.write(f"*:*:*:{name}:{user_password(name)}\n")


def make_managed_cluster(flavor: Flavor, root: Path) -> ManagedCluster:
    """initdb, create the admin, then require scram-sha-256 for every connection."""
    settings = {**TEST_SETTINGS, "password_encryption": "scram-sha-256"}
    cluster = Cluster(flavor.bindir, root / "data", free_port(), settings=settings)
    cluster.init(superuser=ROOT)
    cluster.start()
    run_psql(
        cluster.dsn(ROOT),
        f"ALTER ROLE {ROOT} PASSWORD '{ROOT_PASSWORD}';\n"
        f"CREATE ROLE {ADMIN} LOGIN CREATEROLE CREATEDB PASSWORD '{ADMIN_PASSWORD}';\n"
        f"ALTER DATABASE postgres OWNER TO {ADMIN};\n",
    )
    cluster.set_hba(SCRAM_EVERYWHERE)
    cluster.reload()
    passfile = root / "pgpass"
    passfile.write_text(f"*:*:*:{ROOT}:{ROOT_PASSWORD}\n*:*:*:{ADMIN}:{ADMIN_PASSWORD}\n")
    passfile.chmod(0o600)
    secret_file = root / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    return ManagedCluster(cluster, passfile, secret_file)
