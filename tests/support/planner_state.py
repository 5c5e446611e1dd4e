"""Instance documents as df._load_for_advance returns them, for planner tests without a
database."""

from __future__ import annotations

from typing import Any


def node(node_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    """One stored node, pending unless `fields` say otherwise."""
    item = {"id": node_id, "type": kind, "query": None, "name": None, "left": None}
    item.update(right=None, status="pending", raw=None, error=None, iteration=0)
    item.update(iteration_started=None, **fields)
    return item


def document(root: str, nodes: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A new instance of alice's with these nodes."""
    doc = {"now": 1000.0, "id": "0000abcd", "label": None, "root": root, "status": "pending"}
    doc.update(owner="alice", owner_oid=1, superuser=False, can_login=True, database=None)
    doc.update(vars={}, execution_id=None, version=0, signals=[], events=0, nodes=nodes)
    doc.update(fields)
    return doc


def stored_iteration(node: dict[str, Any], change: dict[str, Any]) -> int:
    """A node's iteration counter once df._apply_plan has written `change` (0 and absent
    leave it, except on a reset)."""
    if change.get("iteration"):
        return int(change["iteration"])
    return 0 if change.get("reset") else int(node["iteration"])
