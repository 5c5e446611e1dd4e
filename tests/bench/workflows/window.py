"""The measurement window around one run: database counters, TCP segments and CPU.

Round trips: every connection to PostgreSQL is loopback TCP with TCP_NODELAY (libpq,
asyncpg/uvloop and pgdurable's relay all set it) and every client here sends a request as
one write, then waits. So the data segments PostgreSQL's sockets *received*
(`ss -ti` data_segs_in, summed over the cluster port's established connections) count the
client→server round trips. Connections that close inside the window are not counted, which
is why the clients keep theirs open until the window is closed.

Over the latency link (tests/bench/link) the segments are counted on the link's port: its
accepted sockets receive exactly what the system under test wrote, as PostgreSQL's would
without the link. The link forwards one write per chunk it read, so PostgreSQL's own count
(kept beside it as segments_in_pg) is the same but for the rare chunk that two writes made
(they arrived before the link read them) or that the kernel split: within 2 segments of
thousands in the runs measured.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from tests.bench.workflows.activity import ActivitySampler
from tests.bench.workflows.stats import (
    SETTLE_S,
    CpuProbe,
    Snapshot,
    StatsDelta,
    StatsReader,
    delta,
)

_SEGS_IN = re.compile(r"\bdata_segs_in:(\d+)")


def tcp_segments_in(port: int | None) -> dict[str, int] | None:
    """data_segs_in per peer address of the established connections to `port` (None: no ss,
    or no port: the systems reach PostgreSQL over a Unix socket, which has no segments)."""
    if port is None:
        return None
    try:
        out = subprocess.run(
            ["ss", "-Htin", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    segments: dict[str, int] = {}
    peer = None
    for line in out.splitlines():
        if line and not line[0].isspace():
            fields = line.split()
            peer = fields[-1] if len(fields) >= 2 else None
            if peer is not None:
                segments[peer] = 0
        elif peer is not None and (m := _SEGS_IN.search(line)):
            segments[peer] = int(m.group(1))
    return segments


@dataclass
class Measurement:
    """What one run cost."""

    stats: StatsDelta
    segments_in: int | None  # client→PostgreSQL data segments (≈ round trips)
    cpu_s: dict[str, float]
    segments_in_pg: int | None = None  # over a link: those PostgreSQL received from it
    in_flight: dict[str, float] | None = None  # mean open transactions by holder (activity.py)


class Window:
    """open() once the clients are connected, stop_cpu() when the load ends, close() last."""

    def __init__(
        self, reader: StatsReader, cpu: CpuProbe, port: int | None, pg_port: int | None = None
    ) -> None:
        """Count segments received on `port` (PostgreSQL's, or the link's), and on
        `pg_port` too when it is PostgreSQL's behind a link."""
        self.reader, self.cpu, self.port, self.pg_port = reader, cpu, port, pg_port
        self._before: Snapshot | None = None
        self._segments: dict[str, int] | None = None
        self._segments_pg: dict[str, int] | None = None
        self._cpu_s: dict[str, float] = {}
        self.activity = ActivitySampler(reader.dsn, reader.databases)
        self._in_flight: dict[str, float] | None = None

    def open(self) -> None:
        self._before = self.reader.snapshot(SETTLE_S)
        self._segments = tcp_segments_in(self.port)
        self._segments_pg = tcp_segments_in(self.pg_port)
        self.cpu.start()
        self.activity.start()

    def stop_cpu(self) -> None:
        self._cpu_s = self.cpu.stop()
        self._in_flight = self.activity.stop()

    def close(self) -> Measurement:
        assert self._before is not None, "window not opened"
        time.sleep(SETTLE_S)
        segments = _grown(self._segments, tcp_segments_in(self.port))
        segments_pg = _grown(self._segments_pg, tcp_segments_in(self.pg_port))
        after = self.reader.snapshot(0.0)
        return Measurement(
            delta(self._before, after), segments, self._cpu_s, segments_pg, self._in_flight
        )


def _grown(before: dict[str, int] | None, after: dict[str, int] | None) -> int | None:
    """Segments received since `before`, summed over the connections open at the end."""
    if before is None or after is None:
        return None
    return sum(max(n - before.get(peer, 0), 0) for peer, n in after.items())
