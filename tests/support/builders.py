"""Helpers of the graph builder tests: a statement's single value or failure, and the
expected Durofut JSON (pg_durable's struct field order, serde_json's compact text)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[tuple[Any, ...]]

# Shorthands for the expected JSON of spec §4.
A = '{"node_type":"SQL","query":"a"}'
B = '{"node_type":"SQL","query":"b"}'
C = '{"node_type":"SQL","query":"c"}'


def value(conn: Conn, sql: str, params: tuple[Any, ...] | None = None) -> Any:
    """The single value `sql` returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def failure(conn: Conn, sql: str) -> tuple[str | None, str | None]:
    """The (SQLSTATE, primary message) that `sql` fails with."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    return caught.value.sqlstate, caught.value.diag.message_primary


def node(node_type: str, **fields: Any) -> dict[str, Any]:
    """A Durofut node in pg_durable's struct field order (the oracle for exact JSON)."""
    order = ("left_node", "right_node", "condition_node", "extra_nodes", "query", "result_name")
    result: dict[str, Any] = {"node_type": node_type}
    for name in order:
        if fields.get(name) is not None:
            result[name] = fields[name]
    return result


def dumps(tree: dict[str, Any]) -> str:
    """serde_json's compact output: no spaces, non-ASCII raw."""
    return json.dumps(tree, separators=(",", ":"), ensure_ascii=False)


def sql_node(query: str, result_name: str | None = None) -> dict[str, Any]:
    return node("SQL", query=query, result_name=result_name)
