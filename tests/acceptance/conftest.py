"""Fixtures for workflow tests: a non-superuser role granted df usage, through pgdurable."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import Flavor, remove_cluster
from tests.support.managed import ManagedCluster, make_managed_cluster
from tests.support.proxy import ProxyProcess

WORKFLOW_ROLE = "wf_user"


@pytest.fixture(scope="session")
def wf_dsn(proxy: ProxyProcess, cluster: Cluster) -> str:
    """DSN (through pgdurable) of a LOGIN role with df usage and a table to write to."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (WORKFLOW_ROLE,))
        if exists.fetchone() is None:
            conn.execute(f"CREATE ROLE {WORKFLOW_ROLE} LOGIN")
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {WORKFLOW_ROLE}")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s)", (WORKFLOW_ROLE,))
    return proxy.dsn(WORKFLOW_ROLE)


@pytest.fixture(scope="session")
def managed(flavor: Flavor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedCluster]:
    """A password-only cluster (scram-sha-256 everywhere, no superuser for pgdurable)."""
    managed = make_managed_cluster(flavor, tmp_path_factory.mktemp(f"managed-{flavor.name}"))
    yield managed
    remove_cluster(managed.cluster)


@pytest.fixture(scope="session")
def managed_proxy(
    managed: ManagedCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """pgdurable in front of `managed`, logging in as its non-superuser admin, with a secret."""
    log_path = tmp_path_factory.mktemp("managed-proxy-log") / "pgdurable.log"
    args = ["--secret-file", str(managed.secret_file)]
    process = ProxyProcess(managed.proxy_upstream(), extra_args=args, log_path=log_path).start()
    yield process
    process.stop()
