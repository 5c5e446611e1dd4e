"""The measurement window around one run: database counters, TCP segments and CPU.

Round trips: every connection to PostgreSQL is loopback TCP with TCP_NODELAY (libpq,
asyncpg/uvloop and pgdurable's relay all set it) and every client here sends a request as
one write, then waits. So the data segments PostgreSQL's sockets *received*
(`ss -ti` data_segs_in, summed over the cluster port's established connections) count the
client→server round trips. Connections that close inside the window are not counted, which
is why the clients keep theirs open until the window is closed.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

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


class Window:
    """open() once the clients are connected, stop_cpu() when the load ends, close() last."""

    def __init__(self, reader: StatsReader, cpu: CpuProbe, port: int | None) -> None:
        self.reader, self.cpu, self.port = reader, cpu, port
        self._before: Snapshot | None = None
        self._segments: dict[str, int] | None = None
        self._cpu_s: dict[str, float] = {}

    def open(self) -> None:
        self._before = self.reader.snapshot(SETTLE_S)
        self._segments = tcp_segments_in(self.port)
        self.cpu.start()

    def stop_cpu(self) -> None:
        self._cpu_s = self.cpu.stop()

    def close(self) -> Measurement:
        assert self._before is not None, "window not opened"
        time.sleep(SETTLE_S)
        segments = tcp_segments_in(self.port)
        after = self.reader.snapshot(0.0)
        total = None
        if segments is not None and self._segments is not None:
            old = self._segments
            total = sum(max(n - old.get(peer, 0), 0) for peer, n in segments.items())
        return Measurement(delta(self._before, after), total, self._cpu_s)
