"""Read pgdurable's /metrics and process memory."""

from __future__ import annotations

import urllib.request
from pathlib import Path


def read_metrics(http_port: int) -> dict[str, float]:
    """The Prometheus counters of a pgdurable process."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name.removeprefix("pgdurable_")] = float(value)
    return values


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
