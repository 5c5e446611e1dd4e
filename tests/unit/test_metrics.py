"""/metrics' collectors: the relay's plain counters and the engine's metrics on one
registry, every family with HELP and TYPE, the catalog's gauges absent until read."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from engine.catalog_gauges import CatalogGauges, CatalogSnapshot
from engine.metrics import PREFIX, EngineMetrics, StepEnd, explained, plain_families
from pgdurable_proxy.metrics import Metrics, process_registry


def _families(registry: CollectorRegistry) -> dict[str, Metric]:
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    raise KeyError(f"{sample} {labels}")


def _process() -> tuple[Metrics, EngineMetrics, CollectorRegistry]:
    relay = Metrics()
    registry = process_registry(relay)
    return relay, EngineMetrics(registry), registry


def test_every_family_has_help_and_a_type_and_the_prefix() -> None:
    _, engine, registry = _process()
    engine.catalog.snapshot = CatalogSnapshot(1, 2, 3, 4, 5.0, 6, 7.0, 8.0)
    families = _families(registry)
    text = generate_latest(registry).decode()
    for name, family in families.items():
        assert family.documentation and family.documentation != name, name
        assert family.type in ("counter", "gauge", "histogram", "info"), (name, family.type)
        assert f"# HELP {name}" in text or f"# HELP {name}_total" in text, name
        assert name.startswith(PREFIX) or name == "python_info", name
    expected = {
        "sessions", "sessions_active", "relay_bytes", "steps_finished", "step_duration_seconds",
        "instances", "instances_finished", "instance_duration_seconds", "tasks_due",
        "tasks_due_oldest_age_seconds", "advances_due", "lease_recoveries",
        "http_step_requests", "catalog_up", "process_resident_memory_bytes",
        "chained_steps", "instances_stored_estimate",
    }  # fmt: skip
    assert {PREFIX + n for n in expected} <= set(families)
    assert "_created" not in text  # disabled: half as many lines


def test_relay_counters_are_read_when_scraped() -> None:
    relay, _, registry = _process()
    relay.sessions_total, relay.sessions_active = 7, 2
    relay.client_bytes, relay.server_bytes = 1200, 34000
    families = _families(registry)
    assert families[PREFIX + "sessions"].type == "counter"
    assert _value(families, PREFIX + "sessions_total") == 7
    assert families[PREFIX + "sessions_active"].type == "gauge"
    assert _value(families, PREFIX + "sessions_active") == 2
    bytes_total = PREFIX + "relay_bytes_total"
    assert _value(families, bytes_total, direction="client_to_server") == 1200
    assert _value(families, bytes_total, direction="server_to_client") == 34000
    relay.client_bytes += 5  # a plain attribute: the next scrape sees it
    assert _value(_families(registry), bytes_total, direction="client_to_server") == 1205


def test_plain_fields_ending_in_total_are_counters_the_others_gauges() -> None:
    @dataclass(slots=True)
    class Some:
        done_total: int = explained("Things done.")
        held: int = explained("Things held.")

    families = {f.name: f for f in plain_families(Some(3, 4))}
    assert families[PREFIX + "done"].type == "counter"
    assert families[PREFIX + "done"].samples[0].name == PREFIX + "done_total"
    assert families[PREFIX + "held"].type == "gauge"
    assert families[PREFIX + "held"].documentation == "Things held."


def test_engine_events_land_in_their_label_sets_which_exist_from_the_start() -> None:
    _, engine, registry = _process()
    families = _families(registry)
    steps = PREFIX + "steps_finished_total"
    assert _value(families, steps, node_type="HTTP", outcome="cancelled") == 0
    assert _value(families, PREFIX + "http_step_requests_total", outcome="timeout") == 0
    engine.step_finished("SQL", StepEnd.FAILED, 0.02)
    engine.instance_finished("completed", 0.7)
    engine.instance_finished("failed", None)  # start time unknown: counted, not observed
    engine.lease_recovered()
    engine.http_outcome("5xx")
    families = _families(registry)
    assert _value(families, steps, node_type="SQL", outcome="failed") == 1
    step_le = PREFIX + "step_duration_seconds_bucket"
    assert _value(families, step_le, node_type="SQL", le="0.01") == 0
    assert _value(families, step_le, node_type="SQL", le="0.025") == 1
    finished = PREFIX + "instances_finished_total"
    assert _value(families, finished, status="completed") == 1
    assert _value(families, finished, status="failed") == 1
    assert _value(families, PREFIX + "instance_duration_seconds_count", status="failed") == 0
    assert _value(families, PREFIX + "instance_duration_seconds_sum", status="completed") == 0.7
    assert _value(families, PREFIX + "lease_recoveries_total") == 1
    assert _value(families, PREFIX + "http_step_requests_total", outcome="5xx") == 1


def test_two_processes_worth_of_metrics_do_not_collide() -> None:
    """One registry each, never prometheus_client's global one."""
    first, second = _process(), _process()
    first[1].lease_recovered()
    assert _value(_families(first[2]), PREFIX + "lease_recoveries_total") == 1
    assert _value(_families(second[2]), PREFIX + "lease_recoveries_total") == 0


async def test_catalog_gauges_are_absent_until_read_and_when_unreadable() -> None:
    gauges = CatalogGauges(PREFIX)
    registry = CollectorRegistry()
    registry.register(gauges)
    assert set(_families(registry)) == {PREFIX + "catalog_up", PREFIX + "catalog_read_seconds"}
    assert _value(_families(registry), PREFIX + "catalog_up") == 0
    gauges.snapshot = CatalogSnapshot(1, 2, 3, 4, 5.5, 6, 7.5, None)
    families = _families(registry)
    assert _value(families, PREFIX + "catalog_up") == 1
    assert _value(families, PREFIX + "instances", status="running") == 2
    assert _value(families, PREFIX + "tasks_due", state="lease_expired") == 4
    assert _value(families, PREFIX + "tasks_due_oldest_age_seconds") == 5.5
    assert _value(families, PREFIX + "advances_due_oldest_age_seconds") == 7.5
    assert PREFIX + "instances_stored_estimate" not in families  # never analysed
    await gauges.refresh(None)  # no pool (not booted): nothing to read
    assert set(_families(registry)) == {PREFIX + "catalog_up", PREFIX + "catalog_read_seconds"}


def test_the_grafana_dashboard_asks_only_for_metrics_pgdurable_serves() -> None:
    dashboard = json.loads(
        (resources.files("pgdurable_proxy") / "grafana_dashboard.json").read_text()
    )
    _, engine, registry = _process()
    engine.catalog.snapshot = CatalogSnapshot(0, 0, 0, 0, 0.0, 0, 0.0, 0.0)
    served = {s.name for f in _families(registry).values() for s in f.samples}
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bpgdurable_[a-z_]+", target["expr"])
    }
    assert len(asked) > 20 and asked <= served, asked - served
