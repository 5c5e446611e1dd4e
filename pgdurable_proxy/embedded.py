"""The embedded PostgreSQL that `pgdurable` starts when no --upstream is given."""

from __future__ import annotations

import logging
from pathlib import Path

from pgdurable_proxy.cluster import Cluster, free_port, wheel_bindir

log = logging.getLogger("pgdurable.embedded")


def start_embedded(data_dir: Path) -> Cluster:
    """Initialise (first time) and start the wheel's PostgreSQL in `data_dir`/pgdata."""
    datadir = data_dir / "pgdata"
    cluster = Cluster(bindir=wheel_bindir(), datadir=datadir, port=0)
    if not cluster.exists():
        log.warning("event=initdb datadir=%s", datadir)
        cluster.init()
    if cluster.is_running():
        cluster.port = _running_port(datadir)
        log.warning("event=embedded_already_running port=%s", cluster.port)
        return cluster
    cluster.port = free_port()
    cluster.start()
    return cluster


def _running_port(datadir: Path) -> int:
    """The port of a postmaster left running (e.g. after pgdurable was killed)."""
    lines = (datadir / "postmaster.pid").read_text().splitlines()
    return int(lines[3])
