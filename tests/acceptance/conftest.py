"""Fixtures for workflow tests: a non-superuser role granted df usage, through pgdurable."""

from __future__ import annotations

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
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
