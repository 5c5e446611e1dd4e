"""df.explain's mode selection (Durofut JSON, instance ID, SQL statement or DSL expression) and
its error texts."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.inspection import explain, explain_text

CANNOT = (
    "Cannot explain input: not a valid Durofut JSON, instance ID, SQL statement, or DSL "
    "expression.\nHint: DSL expressions use df.*() functions and operators like ~>, |=>, &, |."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1", "SQL: SELECT 1    "),
        ("  select 1  ", "SQL: select 1    "),
        ("INSERT INTO t VALUES (1)", "SQL: INSERT INTO t VALUES (1)    "),
        ("with x as (select 1) select * from x", "SQL: with x as (select 1) select * from x    "),
        ("DELETE\nFROM t", "SQL: DELETE\nFROM t    "),
        ("TRUNCATE t", "SQL: TRUNCATE t    "),
        ("SELECT", CANNOT),
        ("VACUUM t", CANNOT),
        ("hello world", CANNOT),
        ('{"query": "SELECT 1"}', CANNOT),
        ('{"node_type": "SQL", "query": 5}', CANNOT),
        ("", CANNOT),
    ],
)
def test_plain_text_modes(conn: psycopg.Connection, text: str, expected: str) -> None:
    assert explain_text(conn, text) == expected


def test_dsl_expression_strings_are_evaluated(conn: psycopg.Connection) -> None:
    assert explain_text(conn, " 'SELECT 1' ~> 'SELECT 2' ") == (
        "SQL: SELECT 1      \n→ SQL: SELECT 2    "
    )
    assert explain_text(conn, "df.sleep(3)") == "SLEEP 3s    "
    assert explain_text(conn, "NULL::text ~> 'SELECT 1'") == "Expression returned NULL"
    assert explain_text(conn, "df.no_such_function()") == (
        "Failed to evaluate expression: function df.no_such_function() does not exist"
    )
    assert explain_text(conn, "df.version() || ''").startswith("Failed to parse Durofut JSON: ")
    assert explain_text(conn, "df.sql('x')::jsonb - 'node_type'") == (
        "Failed to parse Durofut JSON: missing field `node_type`"
    )


def test_validation_errors_are_returned(conn: psycopg.Connection) -> None:
    assert explain_text(conn, '{"node_type":"NOT_A_NODE"}') == (
        "Invalid durable function graph: root: Unknown node_type 'NOT_A_NODE'. Valid types: "
        "SQL, THEN, IF, JOIN, LOOP, BREAK, RACE, SLEEP, WAIT_SCHEDULE, HTTP, HTTP_MULTIPART, "
        "SIGNAL, RETRY, TIMEOUT, COMPENSATED"
    )
    bad_child = (
        '{"node_type":"THEN","left_node":{"node_type":"SQL","query":"SELECT 1"},'
        '"right_node":{"node_type":"SQL","query":"SELECT 2","condition_node":'
        '{"node_type":"SQL","query":"x"}}}'
    )
    assert explain_text(conn, bad_child) == (
        "Invalid durable function graph: root.right: condition_node is not valid for SQL nodes"
    )
    malformed_child = (
        '{"node_type":"THEN","left_node":{"node_type":"SQL","query":"SELECT 1"},'
        '"right_node":{"node_type":"SQL","result_name":7}}'
    )
    assert explain_text(conn, malformed_child) == (  # as df.start says it (pg_durable 0.2.6)
        "Invalid durable function graph: root.right: failed to deserialize Durofut child: "
        "invalid type: integer `7`, expected a string"
    )


def test_explain_is_strict_and_writes_nothing(conn: psycopg.Connection) -> None:
    before = conn.execute("SELECT count(*) FROM df.instances").fetchone()
    assert conn.execute("SELECT df.explain(NULL)").fetchone() == (None,)
    explain(conn, "'SELECT 1' ~> 'SELECT 2'")
    explain_text(conn, "df.sleep(1) | 'SELECT 1'")
    assert conn.execute("SELECT count(*) FROM df.instances").fetchone() == before
