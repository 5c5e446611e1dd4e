"""The embedded PostgreSQL that `pgdurable` starts when no --upstream is given.

pgdurable reaches it over a Unix socket in its data directory (cheaper than loopback TCP
for each of a step's round trips), unless that path is too long for a socket address; it
also listens on loopback TCP, as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pgdurable_proxy.cluster import Cluster, free_port, wheel_bindir

log = logging.getLogger("pgdurable.embedded")
SOCKET_PATH_MAX = 107  # bytes of sun_path, without its terminating NUL
SOCKETS = "unix_socket_directories"


def start_embedded(data_dir: Path) -> Cluster:
    """Initialise (first time) and start the wheel's PostgreSQL in `data_dir`/pgdata."""
    datadir = data_dir / "pgdata"
    sockets = {SOCKETS: str(datadir)} if _socket_fits(datadir) else {}
    cluster = Cluster(bindir=wheel_bindir(), datadir=datadir, port=0, settings=sockets)
    if not cluster.exists():
        log.info("event=initdb datadir=%s", datadir)
        cluster.init()
    if cluster.is_running():
        cluster.port, running_sockets = _running_address(datadir)
        cluster.settings = {SOCKETS: running_sockets} if running_sockets else {}
        log.info("event=embedded_already_running port=%s", cluster.port)
        return cluster
    cluster.port = free_port()
    cluster.start()
    return cluster


def embedded_dsn(cluster: Cluster) -> str:
    """How pgdurable reaches the embedded server: its Unix socket if it has one."""
    return cluster.socket_dsn() if cluster.settings.get(SOCKETS) else cluster.dsn()


def _socket_fits(datadir: Path) -> bool:
    return len(str(datadir / ".s.PGSQL.65535").encode()) <= SOCKET_PATH_MAX


def _running_address(datadir: Path) -> tuple[int, str]:
    """The port and socket directory of a postmaster left running (e.g. after pgdurable
    was killed), from postmaster.pid."""
    lines = (datadir / "postmaster.pid").read_text().splitlines()
    return int(lines[3]), lines[4] if len(lines) > 4 else ""
