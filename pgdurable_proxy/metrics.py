"""Process-wide counters, exposed as Prometheus text on the admin HTTP port."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Metrics:
    """Counters the relay and interceptor bump; read by /metrics."""

    sessions_total: int = 0
    sessions_active: int = 0
    candidates_total: int = 0  # Q/P messages that passed the byte pre-filter
    classified_total: int = 0  # candidates that reached pglast (cache misses)
    classify_cache_hits_total: int = 0
    classify_cache_entries: int = 0  # gauge: verdicts held by the classifier cache
    classify_cache_bytes: int = 0  # gauge: what they hold (texts + a fixed charge each)
    workflow_statements_total: int = 0
    protocol_violations_total: int = 0
    clients_refused_total: int = 0  # over --max-client-connections: FATAL 53300

    def render(self) -> str:
        """The counters in Prometheus exposition format."""
        return render_counters(self)


def render_counters(counters: object) -> str:
    """A dataclass of counters in Prometheus exposition format (counters end in _total)."""
    lines = []
    for item in fields(counters):  # type: ignore[arg-type]
        kind = "counter" if item.name.endswith("_total") else "gauge"
        lines.append(f"# TYPE pgdurable_{item.name} {kind}")
        lines.append(f"pgdurable_{item.name} {getattr(counters, item.name)}")
    return "\n".join(lines) + "\n"
