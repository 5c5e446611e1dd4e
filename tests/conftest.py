"""Session fixtures: real PostgreSQL clusters (PG 18 wheel, PG 15 Debian) and pgdurable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.clusters import FLAVORS, Flavor, make_cluster, remove_cluster
from tests.support.proxy import ProxyProcess

# Every pgdurable the tests start checks the instance state it holds in memory against the
# database after each use, and stops on any difference (the benchmarks do not).
os.environ.setdefault("PGDURABLE_VERIFY_HELD_STATE", "1")
# Pooled step connections close after 1 s unused (default 4 s), so a test may drop a
# database its workflows used without waiting.
os.environ.setdefault("PGDURABLE_STEP_IDLE_TIMEOUT", "1")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `-n 2 --dist loadgroup` (the default options), every test of one PostgreSQL
    flavor runs in the same worker: each flavor's clusters and pgdurable start once, and the
    two flavors run side by side."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        flavor = callspec.params.get("flavor") if callspec is not None else None
        if isinstance(flavor, Flavor):
            item.add_marker(pytest.mark.xdist_group(flavor.name))


@pytest.fixture(scope="session", params=FLAVORS, ids=[f.name for f in FLAVORS])
def flavor(request: pytest.FixtureRequest) -> Flavor:
    """Each PostgreSQL build present on this machine."""
    flavor: Flavor = request.param
    if not flavor.available:
        pytest.skip(f"{flavor.name}: no PostgreSQL binaries at {flavor.bindir}")
    return flavor


@pytest.fixture(scope="session")
def cluster(flavor: Flavor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running cluster of `flavor` with the trust/md5/SCRAM auth matrix roles."""
    root: Path = tmp_path_factory.mktemp(f"cluster-{flavor.name}")
    cluster = make_cluster(flavor, root)
    yield cluster
    remove_cluster(cluster)


@pytest.fixture(scope="session")
def proxy(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """The real pgdurable process fronting `cluster`."""
    log_path = tmp_path_factory.mktemp("proxy-log") / "pgdurable.log"
    process = ProxyProcess(cluster.dsn(), log_path=log_path).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def catalog_dsn(cluster: Cluster) -> str:
    """A fresh database of `cluster` with the df catalog migrated in (engine not running)."""
    from tests.support.catalog import create_database, install_catalog

    dsn = create_database(cluster, "df_catalog")
    install_catalog(dsn)
    return dsn
