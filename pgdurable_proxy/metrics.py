"""The relay's counters, and the process's Prometheus registry served on the admin port.

The relay bumps plain integer attributes of one `Metrics` object on its hot path (an
attribute increment per chunk received costs far less than a prometheus_client Counter's
lock per message); `RelayCollector` turns them into metric families when /metrics is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import prometheus_client
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.metrics import PREFIX, explained, plain_families

_RELAY_BYTES_HELP = (
    "Bytes the relay received and passed on, by direction: client_to_server from clients, "
    "server_to_client from PostgreSQL (counted per chunk read, before any rewriting)."
)


@dataclass(slots=True)
class Metrics:
    """Counters the relay and interceptor bump; read by /metrics (through RelayCollector)."""

    sessions_total: int = explained("Client connections accepted.")
    sessions_active: int = explained("Client connections open now.")
    candidates_total: int = explained(
        "Simple-query and Parse messages whose text passed the byte pre-filter for df calls."
    )
    classified_total: int = explained("Candidates parsed with pglast (classifier cache misses).")
    classify_cache_hits_total: int = explained("Candidates answered by the classifier cache.")
    classify_cache_entries: int = explained("Verdicts held by the classifier cache.")
    classify_cache_bytes: int = explained("Bytes the classifier cache holds (texts and entries).")
    workflow_statements_total: int = explained("Statements classified as workflow statements.")
    protocol_violations_total: int = explained("Client sessions ended for a protocol violation.")
    clients_refused_total: int = explained(
        "Clients refused with FATAL 53300 (over --max-client-connections)."
    )
    # relay bytes: bumped per chunk in ClientSession/UpstreamLink.data_received
    client_bytes: int = field(default=0, repr=False)
    server_bytes: int = field(default=0, repr=False)


class RelayCollector(Collector):
    """The relay's `Metrics` as metric families, built when /metrics is read."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        metrics = self.metrics
        yield from plain_families(metrics, skip=("client_bytes", "server_bytes"))
        relayed = CounterMetricFamily(
            f"{PREFIX}relay_bytes", _RELAY_BYTES_HELP, labels=["direction"]
        )
        relayed.add_metric(["client_to_server"], metrics.client_bytes)
        relayed.add_metric(["server_to_client"], metrics.server_bytes)
        yield relayed


def process_registry(metrics: Metrics) -> CollectorRegistry:
    """The registry /metrics serves: the relay's counters and the process's own metrics
    (the engine adds its own). One per process, never prometheus_client's global one."""
    # no *_created series beside each counter and histogram: half as many lines to scrape
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(RelayCollector(metrics))
    ProcessCollector(namespace=PREFIX.rstrip("_"), registry=registry)
    PlatformCollector(registry=registry)
    return registry
