"""What the planner knows about nodes and what driving a node can come to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Node:
    """One df.nodes row (plus engine state) as the planner sees it."""

    id: str
    type: str
    query: str | None
    name: str | None
    left: str | None
    right: str | None
    status: str
    raw: str | None
    error: str | None
    iteration: int = 0
    iteration_started: float | None = None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Node:
        return cls(
            item["id"],
            item["type"],
            item["query"],
            item["name"],
            item["left"],
            item["right"],
            item["status"],
            item["raw"],
            item["error"],
            int(item.get("iteration") or 0),
            item.get("iteration_started"),
        )

    def config(self) -> dict[str, object]:
        """The node's JSON config (its query), or {} when that is not a JSON object (users
        may write node rows by hand)."""
        try:
            value = json.loads(self.query or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Done:
    """Finished with a result (compact JSON text)."""

    raw: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Finished with an error message."""

    error: str


@dataclass(frozen=True, slots=True)
class Broke:
    """A df.break() reached: the innermost enclosing loop ends with this value."""

    raw: str


WAITING = None
Outcome = Done | Failed | Broke | None
