"""Read pgdurable's /metrics and process memory."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def scrape(http_port: int) -> str:
    """The /metrics page of a pgdurable process."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def read_families(http_port: int) -> dict[str, Metric]:
    """/metrics parsed by prometheus_client, by family name."""
    return {f.name: f for f in text_string_to_metric_families(scrape(http_port))}


def read_metrics(http_port: int) -> dict[str, float]:
    """Each sample of /metrics by its name without the pgdurable_ prefix, labels (if any)
    sorted in braces: `chained_steps_total`, `steps_finished_total{node_type="SQL",...}`."""
    values = {}
    for family in text_string_to_metric_families(scrape(http_port)):
        for sample in family.samples:
            key = sample.name.removeprefix("pgdurable_")
            if sample.labels:
                pairs = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                key += "{" + pairs + "}"
            values[key] = sample.value
    return values


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
