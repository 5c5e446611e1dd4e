"""What the engine measures, for /metrics: per-step and per-instance events as
prometheus_client objects, plain counters (EngineCounters) turned into metric families at
scrape time, and the catalog's gauges (engine/catalog_gauges.py).

Each event here happens once per step or instance, not per message: a prometheus_client
Counter's lock costs nothing next to the step's own round trips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.catalog_gauges import CatalogGauges
from engine.planner.kinds import HTTP_TYPES, TIMER_TYPES, NodeType

PREFIX = "pgdurable_"
LEAF_TYPES = (NodeType.SQL, *HTTP_TYPES, *TIMER_TYPES)  # the node types that run as tasks
# seconds: SQL steps of a millisecond up to HTTP steps of minutes
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# seconds: a one-step workflow up to one that sleeps for days
INSTANCE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400, 604800)
HTTP_OUTCOMES = ("2xx", "3xx", "4xx", "5xx", "timeout", "blocked", "cancelled", "error")


def explained(help_text: str) -> int:
    """A counter field of a dataclass, starting at 0, with its /metrics HELP text."""
    value: int = field(default=0, metadata={"help": help_text})
    return value


def plain_families(
    counters: object, skip: tuple[str, ...] = ()
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """A dataclass of plain integers as metric families: a field ending in _total is a
    counter, any other a gauge; HELP from the field's metadata (see explained)."""
    for item in fields(counters):  # type: ignore[arg-type]
        if item.name in skip:
            continue
        value = getattr(counters, item.name)
        help_text = item.metadata.get("help", item.name)
        if item.name.endswith("_total"):
            name = PREFIX + item.name.removesuffix("_total")
            yield CounterMetricFamily(name, help_text, value=value)
        else:
            yield GaugeMetricFamily(PREFIX + item.name, help_text, value=value)


@dataclass(slots=True)
class EngineCounters:
    """What the engine did since it started: plain integers bumped on its paths."""

    scheduler_passes_total: int = explained(
        "Scheduler passes (df._poll): on a wake-up of this engine's share, on its poll "
        "interval, or when a step slot frees up for due work."
    )
    advances_total: int = explained("Instance advances applied on the engine's own connections.")
    in_step_advances_held_total: int = explained(
        "Advances applied in an SQL step's own transaction, planned from held state."
    )
    in_step_advances_loaded_total: int = explained(
        "Advances applied in an SQL step's own transaction, planned from a fresh load."
    )
    first_steps_total: int = explained(
        "New instances advanced in their first SQL step's transaction."
    )
    first_steps_announced_total: int = explained(
        "First steps taken on the first document a relayed df.start announced, without a "
        "scheduler pass."
    )
    first_steps_promoted_total: int = explained(
        "First steps that ran long and had their first plan committed apart."
    )
    chained_steps_total: int = explained(
        "SQL steps whose transaction was begun by their instance's previous step's COMMIT."
    )
    pipelined_steps_total: int = explained(
        "Chained SQL steps whose statement was sent with their instance's previous step's "
        "COMMIT, in the same round trip."
    )
    handed_over_steps_total: int = explained(
        "SQL steps begun on a connection another instance's step handed over."
    )


class StepEnd(StrEnum):
    """How a leaf task ended, as /metrics counts it."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"  # failed, and its failure policy gave it another attempt
    CANCELLED = "cancelled"  # this engine cancelled it (a RACE lost, its instance cancelled)


class _CountersCollector(Collector):
    def __init__(self, counters: EngineCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        return plain_families(self.counters)


class _SlotsCollector(Collector):
    """The step slots as they are at the scrape (EngineMetrics.watch_slots)."""

    def __init__(self) -> None:
        self.read: Callable[[], tuple[int, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use, waiting = self.read() if self.read is not None else (0, 0)
        yield GaugeMetricFamily(
            PREFIX + "step_slots_in_use",
            "Step slots (--max-user-connections) held by SQL steps now, or by their "
            "connections being given back.",
            value=in_use,
        )
        yield GaugeMetricFamily(
            PREFIX + "steps_waiting_for_slot",
            "SQL steps (a new instance's first step among them) waiting for a step slot now.",
            value=waiting,
        )


class EngineMetrics:
    """The engine's metrics, on the process's registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.counters = EngineCounters()
        self.catalog = CatalogGauges(PREFIX)
        self.registry.register(_CountersCollector(self.counters))
        self.registry.register(self.catalog)
        self._slots = _SlotsCollector()
        self.registry.register(self._slots)
        on = self.registry
        self.steps = Counter(
            PREFIX + "steps_finished",
            "Leaf steps this engine finished, by node type and outcome.",
            ["node_type", "outcome"],
            registry=on,
        )
        self.step_seconds = Histogram(
            PREFIX + "step_duration_seconds",
            "How long this engine took to run a leaf step, from its start (or its claim) "
            "to its recorded result, retries through outages included.",
            ["node_type"],
            buckets=STEP_BUCKETS,
            registry=on,
        )
        self.instances = Counter(
            PREFIX + "instances_finished",
            "Instances this engine finished since it started, by final status (a cancelled "
            "instance is cancelled by df.cancel, not here).",
            ["status"],
            registry=on,
        )
        self.instance_seconds = Histogram(
            PREFIX + "instance_duration_seconds",
            "From df.start (the instance's created_at) to the plan that finished it, by status.",
            ["status"],
            buckets=INSTANCE_BUCKETS,
            registry=on,
        )
        self.lease_recoveries = Counter(
            PREFIX + "lease_recoveries",
            "Tasks this engine claimed after an earlier lease on them expired (a step run "
            "again after its engine died or lost PostgreSQL).",
            registry=on,
        )
        self.http = Counter(
            PREFIX + "http_step_requests",
            "HTTP step requests by outcome: the status class of the last answer (after "
            "redirects), or timeout, blocked (destination not allowed), cancelled (the step "
            "was abandoned) or error (no answer).",
            ["outcome"],
            registry=on,
        )
        self._initialise()

    def _initialise(self) -> None:
        """Every label set exists from the start (rates need the zero)."""
        for node_type in LEAF_TYPES:
            self.step_seconds.labels(node_type.value)
            for end in StepEnd:
                self.steps.labels(node_type.value, end.value)
        for status in (StepEnd.COMPLETED, StepEnd.FAILED):
            self.instances.labels(status.value)
            self.instance_seconds.labels(status.value)
        for outcome in HTTP_OUTCOMES:
            self.http.labels(outcome)

    def watch_slots(self, read: Callable[[], tuple[int, int]]) -> None:
        """Where the step-slot gauges come from: (slots in use, steps waiting for one)."""
        self._slots.read = read

    def step_finished(self, node_type: str, end: StepEnd, seconds: float) -> None:
        self.steps.labels(node_type, end.value).inc()
        self.step_seconds.labels(node_type).observe(seconds)

    def instance_finished(self, status: str, seconds: float | None) -> None:
        """An instance completed or failed (`seconds` since its start, when known)."""
        self.instances.labels(status).inc()
        if seconds is not None:
            self.instance_seconds.labels(status).observe(max(seconds, 0.0))

    def lease_recovered(self) -> None:
        self.lease_recoveries.inc()

    def http_outcome(self, outcome: str) -> None:
        self.http.labels(outcome).inc()
