"""The dashboard's HTML (Jinja2 templates shipped in the package, every value escaped) and
the JSON its live refresh reads."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
from aiohttp import web

from pgdurable_proxy.dashboard.graph import Diagram
from pgdurable_proxy.dashboard.queries import (
    SHOWN_CHARACTERS,
    InstanceRow,
    InstanceView,
    NodeRow,
)

INSTANCE_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
NODE_STATUSES = ("pending", "running", "completed", "failed", "skipped")
STALLED_FOR_DEFAULT = "5m"
STALLED_FOR_MAX = timedelta(days=365)
_STALLED_FOR = re.compile(r"([0-9]{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MARKERS = {"completed": "✓", "failed": "✗", "running": "▶", "pending": "○", "skipped": "⊘"}


def when(value: datetime | None) -> str:
    """A timestamp as the pages show it (UTC, to the second)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def parse_stalled_for(text: str) -> timedelta | None:
    """The stalled page's interval: a whole number of seconds, minutes, hours or days
    (`30s`, `5m`, `1h`, `2d`) up to a year; None for anything else."""
    found = _STALLED_FOR.fullmatch(text.strip())
    if found is None:
        return None
    interval = timedelta(seconds=int(found.group(1)) * _UNIT_SECONDS[found.group(2)])
    return interval if interval <= STALLED_FOR_MAX else None


def duration(value: timedelta | None) -> str:
    """A duration as the pages show it: `2d 3h 4m 5s`, leading zero units left out."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size or parts:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join([*parts, f"{seconds}s"])


def shown_result(node: NodeRow) -> str:
    """A node's result as text (an error as its message), saying when it was cut."""
    if node.result is None:
        return ""
    text = node.result
    if node.status == "failed":  # the error message, stored as a JSON string
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        text = decoded if isinstance(decoded, str) else text
    if (node.result_length or 0) > SHOWN_CHARACTERS:
        text += f"\n… ({node.result_length} characters; the first {SHOWN_CHARACTERS} shown)"
    return text


class Pages:
    """Renders the templates; autoescape is on for every one of them."""

    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("pgdurable_proxy.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["when"] = when
        self._env.filters["shown_result"] = shown_result
        self._env.filters["duration"] = duration

    def render(self, template: str, http_status: int = 200, **context: Any) -> web.Response:
        """An HTML response of `template` with `context`."""
        values = {"session": None, "flash": None, "error": None, **context}
        text = self._env.get_template(template).render(**values)
        return web.Response(text=text, status=http_status, content_type="text/html")


def instance_row_json(row: InstanceRow) -> dict[str, Any]:
    """A line of the instances page, for the live refresh."""
    return {
        "instance_id": row.instance_id,
        "label": row.label,
        "status": row.status,
        "owner": row.owner,
        "created_at": when(row.created_at),
        "completed_at": when(row.completed_at),
        "execution_count": row.execution_count,
    }


def instance_json(view: InstanceView) -> dict[str, Any]:
    """An instance page's changing parts, for the live refresh."""
    instance, nodes, executions = view.instance, view.nodes, view.executions
    return {
        "instance_id": instance.instance_id,
        "label": instance.label,
        "status": instance.status,
        "owner": instance.owner,
        "terminal": instance.status in TERMINAL_STATUSES,
        "completed_at": when(instance.completed_at),
        "execution_count": instance.execution_count,
        "output": instance.output,
        "nodes": [
            {
                "node_id": n.node_id,
                "node_type": n.node_type,
                "status": n.inferred_status,
                "stored_status": n.status,
                "failed": n.status == "failed",
                "result": shown_result(n),
                "status_details": n.status_details,
                "updated_at": when(n.updated_at),
            }
            for n in nodes
        ],
        "executions": [
            {
                "execution_id": e.execution_id,
                "status": e.status,
                "event_count": e.event_count,
                "duration_ms": e.duration_ms,
                "output": e.output,
            }
            for e in executions
        ],
        "explain": view.explain,
    }


def diagram_context(diagram: Diagram) -> dict[str, Any]:
    """What instance.html needs besides the rows."""
    return {
        "diagram": diagram,
        "markers": MARKERS,
        "node_statuses": NODE_STATUSES,
        "terminal": TERMINAL_STATUSES,
    }
