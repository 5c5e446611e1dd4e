"""df.explain in dry-run mode: node labels and their truncation."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support.inspection import explain, explain_text

HTTP_40 = "https://example.blob.core.windows.net/abc"[:40]
HTTP_41 = "https://example.blob.core.windows.net/abcd"[:41]

LABELS = [
    ("df.sql('SELECT 1')", "SQL: SELECT 1"),
    ("df.sql('SELECT ' || repeat('x', 43))", "SQL: SELECT " + "x" * 43),
    ("df.sql('SELECT ' || repeat('x', 44))", "SQL: SELECT " + "x" * 40 + "..."),
    ("df.sql('SELECT ' || repeat('é', 30))", "SQL: SELECT " + "é" * 20 + "..."),
    ("df.sql('SELECT x' || repeat('é', 30))", "SQL: SELECT x" + "é" * 19 + "..."),
    ("df.sleep(60)", "SLEEP 60s"),
    ("df.sleep(0)", "SLEEP 0s"),
    ("df.wait_for_schedule('0 * * * *')", "WAIT '0 * * * *'"),
    ("df.http('https://example.com/api', 'get')", "HTTP GET https://example.com/api"),
    (f"df.http('{HTTP_40}')", f"HTTP POST {HTTP_40}"),
    (f"df.http('{HTTP_41}', 'PUT')", f"HTTP PUT {HTTP_41[:37]}..."),
    (
        "df.http_multipart('https://a.blob.core.windows.net/c', 'POST', "
        """'[{"name": "f", "data_b64": "aGk="}]')""",
        "HTTP_MULTIPART POST https://a.blob.core.windows.net/c",
    ),
    ("df.wait_for_signal('approval')", "SIGNAL 'approval'"),
    ("df.wait_for_signal('approval', 3600)", "SIGNAL 'approval' (3600s)"),
    ("df.break()", "BREAK"),
    ("df.break('done')", "BREAK 'done'"),
    ("df.break(repeat('v', 20))", "BREAK '" + "v" * 20 + "'"),
    ("df.break(repeat('v', 21))", "BREAK '" + "v" * 17 + "...'"),
    ("df.loop('SELECT 1')", "LOOP (infinite)"),
    ("@> ('SELECT 1')", "LOOP (infinite)"),
    ("df.loop('SELECT 1', 'SELECT false')", "LOOP (while)"),
    ("df.if('SELECT true', 'SELECT 1', 'SELECT 2')", "IF"),
    ("'SELECT 1' & 'SELECT 2'", "JOIN (2)"),
    ("df.join3('SELECT 1', 'SELECT 2', 'SELECT 3')", "JOIN (3)"),
    ("'SELECT 1' | 'SELECT 2'", "RACE"),
    ("'SELECT 1' |=> 'a'", "SQL: SELECT 1 |=> 'a'"),
    ("df.sleep(5) |=> 's'", "SLEEP 5s |=> 's'"),
    ("('SELECT 1' & 'SELECT 2') |=> 'pair'", "JOIN (2) |=> 'pair'"),
    ("('SELECT 1' ~> 'SELECT 2') |=> 'n'", "SQL: SELECT 1"),
]


@pytest.mark.parametrize(("expression", "label"), LABELS, ids=[e for e, _ in LABELS])
def test_node_label(conn: psycopg.Connection, expression: str, label: str) -> None:
    lines = explain(conn, expression).split("\n")
    assert lines[0].rstrip(" ") == label
    if len(lines) == 1:
        assert lines[0] == label + "    "


def test_query_of_exactly_fifty_bytes_is_kept_and_newlines_are_not_collapsed(
    conn: psycopg.Connection,
) -> None:
    fifty = "SELECT " + "y" * 43
    assert len(fifty) == 50
    assert explain_text(conn, json.dumps({"node_type": "SQL", "query": fifty})) == (
        f"SQL: {fifty}    "
    )
    multi = "SELECT 1\nFROM t"
    assert explain(conn, "df.sql(E'SELECT 1\\nFROM t')") == f"SQL: {multi}    "
