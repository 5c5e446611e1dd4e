"""Helpers of the df.explain and df.instance_nodes tests: df.explain's text, and instances
written by hand as the admin (the table owner bypasses row-level security), exactly as the
engine would leave them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg


def explain(conn: psycopg.Connection, expression: str) -> str:
    """df.explain of a SQL expression evaluated by the server (e.g. a builder call)."""
    row = conn.execute(f"SELECT df.explain({expression})").fetchone()
    assert row is not None
    return str(row[0])


def explain_text(conn: psycopg.Connection, text: str) -> str:
    """df.explain of a text value bound as a parameter."""
    row = conn.execute("SELECT df.explain(%s)", (text,)).fetchone()
    assert row is not None
    return str(row[0])


def padded(*lines: str) -> str:
    """Lines right-padded to the longest line + 4 characters, joined without a final newline."""
    width = max(len(line) for line in lines) + 4
    return "\n".join(line.ljust(width) for line in lines)


@dataclass(frozen=True)
class Node:
    """One df.nodes row; `stamp` is the execution stamp with {i} for the instance id."""

    id: str
    node_type: str
    query: str | None = None
    left: str | None = None
    right: str | None = None
    status: str = "pending"
    result: object = None
    stamp: str | None = None
    name: str | None = None


def insert_instance(
    conn: psycopg.Connection,
    nodes: Sequence[Node],
    *,
    status: str,
    executions: Sequence[tuple[str, str | None]] = (),
    label: str | None = None,
    owner: str | None = None,
    node_owner: str | None = "same",
) -> str:
    """Insert an instance (root = first node), its nodes and executions; return its id."""
    instance_id = secrets.token_hex(4)
    owner_role = owner or "postgres"
    node_role = owner_role if node_owner == "same" else node_owner
    with conn.transaction():
        conn.execute(
            "INSERT INTO df.instances (id, label, root_node, status, submitted_by) "
            "VALUES (%s, %s, %s, %s, %s::regrole)",
            (instance_id, label, nodes[0].id, status, owner_role),
        )
        for node in nodes:
            terminal = node.status in ("completed", "failed")
            conn.execute(
                "INSERT INTO df.nodes (id, instance_id, node_type, query, result_name, left_node,"
                " right_node, status, result, status_details, submitted_by) VALUES (%s, %s, %s,"
                " %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::regrole)",
                (
                    node.id,
                    instance_id,
                    node.node_type,
                    node.query,
                    node.name,
                    node.left,
                    node.right,
                    node.status,
                    json.dumps(node.result) if terminal else None,
                    json.dumps({"execution_id": node.stamp.format(i=instance_id)})
                    if node.stamp
                    else None,
                    node_role,
                ),
            )
        for number, (engine_status, output) in enumerate(executions, start=1):
            conn.execute(
                "INSERT INTO df._executions (instance_id, execution_id, submitted_by, status,"
                " output) VALUES (%s, %s, %s::regrole, %s, %s)",
                (instance_id, number, owner_role, engine_status, output),
            )
    return instance_id


def inferred(conn: psycopg.Connection, instance_id: str) -> dict[str, tuple[str, str, str | None]]:
    """node id -> (stored status, inferred status, inferred-from ancestor id)."""
    rows = conn.execute(
        "SELECT node_id, status, inferred_status, inferred_status_from_ancestor_id "
        "FROM df.instance_nodes(%s)",
        (instance_id,),
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


ONE = '{"rows":[{"?column?":1}],"row_count":1}'
ROWS_ONE = {"rows": [{"?column?": 1}], "row_count": 1}


def completed_if(conn: psycopg.Connection) -> str:
    """df.if('SELECT true','SELECT 1','SELECT 2'), completed through the then branch."""
    return insert_instance(
        conn,
        [
            Node("aa000001", "IF", '{"condition_node":"aa000002"}', "aa000003", "aa000004",
                 "completed", ROWS_ONE, "{i}::1"),
            Node("aa000002", "SQL", "SELECT true", status="completed",
                 result={"rows": [{"bool": True}], "row_count": 1}, stamp="{i}::1"),
            Node("aa000003", "SQL", "SELECT 1", status="completed", result=ROWS_ONE,
                 stamp="{i}::1"),
            Node("aa000004", "SQL", "SELECT 2"),
        ],
        status="completed",
        executions=[("Completed", ONE)],
        label="if-demo",
    )  # fmt: skip
