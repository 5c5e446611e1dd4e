"""Row-level security of df.explain and df.instance_nodes: users inspect only their own
instances."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.inspection import (
    ROWS_ONE,
    Node,
    completed_if,
    explain_text,
    inferred,
    insert_instance,
    padded,
)

READER = "inspect_reader"


@pytest.fixture
def reader(conn: psycopg.Connection, catalog_dsn: str) -> Iterator[psycopg.Connection]:
    conn.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') "
        f"THEN CREATE ROLE {READER} LOGIN; END IF; END $$"
    )
    conn.execute("SELECT df.grant_usage(%s)", (READER,))
    with psycopg.connect(catalog_dsn, autocommit=True) as other:
        other.execute(f"SET ROLE {READER}")
        yield other


def test_users_see_only_their_own_instances(
    conn: psycopg.Connection, reader: psycopg.Connection
) -> None:
    admins = completed_if(conn)
    assert explain_text(reader, admins) == f"Instance '{admins}' not found"
    assert reader.execute("SELECT * FROM df.instance_nodes(%s)", (admins,)).fetchall() == []
    mine = insert_instance(
        conn,
        [
            Node("ae000001", "THEN", None, "ae000002", "ae000003", "running", None, "{i}::1"),
            Node("ae000002", "SQL", "SELECT 1", status="completed", result=ROWS_ONE,
                 stamp="{i}::1"),
            Node("ae000003", "SQL", "SELECT 2", status="running", stamp="{i}::1"),
        ],
        status="running",
        executions=[("Running", None)],
        owner=READER,
    )  # fmt: skip
    assert explain_text(reader, mine) == (
        f"Instance: {mine}\nStatus:   ⏳ Running\n\n"
        + padded("SQL: SELECT 1 ✓", "→ SQL: SELECT 2 ⏳")
    )
    assert inferred(reader, mine) == {
        "ae000001": ("running", "running", None),
        "ae000002": ("completed", "completed", None),
        "ae000003": ("running", "running", None),
    }


def test_instance_whose_nodes_are_invisible(
    conn: psycopg.Connection, reader: psycopg.Connection
) -> None:
    instance_id = insert_instance(
        conn, [Node("af000001", "SQL", "SELECT 1")], status="pending", owner=READER,
        node_owner=None,
    )  # fmt: skip
    assert explain_text(reader, instance_id) == f"No nodes found for instance '{instance_id}'"
