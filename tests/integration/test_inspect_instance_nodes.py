"""df.instance_nodes' columns and values, and its legacy two-argument overload."""

from __future__ import annotations

import psycopg

from tests.support.inspection import completed_if


def test_instance_nodes_columns_and_values(conn: psycopg.Connection) -> None:
    instance_id = completed_if(conn)
    cur = conn.execute(
        "SELECT * FROM df.instance_nodes(%s) WHERE node_id = 'aa000001'", (instance_id,)
    )
    assert [c.name for c in cur.description or ()] == [
        "node_id", "node_type", "query", "result_name", "left_node", "right_node", "status",
        "result", "status_details", "inferred_status", "inferred_status_from_ancestor_id",
        "updated_at",
    ]  # fmt: skip
    row = cur.fetchone()
    assert row is not None
    assert row[:11] == (
        "aa000001", "IF", '{"condition_node":"aa000002"}', None, "aa000003", "aa000004",
        "completed", '{"rows": [{"?column?": 1}], "row_count": 1}',
        f'{{"execution_id": "{instance_id}::1"}}', "completed", None,
    )  # fmt: skip


def test_legacy_instance_nodes_overload(conn: psycopg.Connection) -> None:
    instance_id = completed_if(conn)
    cur = conn.execute("SELECT * FROM df.instance_nodes(%s, 3) ORDER BY node_id", (instance_id,))
    assert [c.name for c in cur.description or ()] == [
        "execution_id", "node_id", "node_type", "query", "result_name", "left_node",
        "right_node", "status", "result", "updated_at",
    ]  # fmt: skip
    rows = cur.fetchall()
    assert [r[:3] for r in rows] == [
        (1, "aa000001", "IF"),
        (1, "aa000002", "SQL"),
        (1, "aa000003", "SQL"),
        (1, "aa000004", "SQL"),
    ]
    assert rows[3][7:9] == ("pending", None)
