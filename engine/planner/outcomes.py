"""What the planner knows about nodes and what driving a node can come to."""

from __future__ import annotations

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
