"""df.explain, df.instance_nodes and inferred statuses (spec §3.6, §5.5, §7) on the catalog.

Dry-run graphs come from literal Durofut JSON and from the builders; live instances are
written by hand as the admin (the table owner bypasses row-level security), exactly as the
engine would leave them, so no engine is needed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg
import pytest

READER = "inspect_reader"


@pytest.fixture
def conn(catalog_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(catalog_dsn, autocommit=True) as connection:
        yield connection


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


# ---------------------------------------------------------------------------------------
# Dry-run: the §7 examples
# ---------------------------------------------------------------------------------------


def test_two_step_sequence_is_padded_exactly(conn: psycopg.Connection) -> None:
    expected = "SQL: SELECT 1      \n→ SQL: SELECT 2    "
    assert explain(conn, "'SELECT 1' ~> 'SELECT 2'") == expected
    literal = (
        '{"node_type":"THEN","left_node":{"node_type":"SQL","query":"SELECT 1"},'
        '"right_node":{"node_type":"SQL","query":"SELECT 2"}}'
    )
    assert explain_text(conn, literal) == expected
    assert explain_text(conn, "\n  " + literal + "  \n") == expected


def test_sequence_with_names_and_an_if(conn: psycopg.Connection) -> None:
    expected = padded(
        "SQL: SELECT 1 |=> 'a'",
        "→ SQL: SELECT 2",
        "→ IF",
        "    ? condition:",
        "      └─SQL: SELECT $a > 0",
        "    ✓ then:",
        "      └─SQL: SELECT 'yes'",
        "    ✗ else:",
        "      └─SQL: SELECT 'no'",
    )
    assert expected.splitlines()[0] == "SQL: SELECT 1 |=> 'a'" + " " * 9
    built = (
        "'SELECT 1' |=> 'a' ~> 'SELECT 2' |=> 'b' ~> "
        "df.if('SELECT $a > 0', 'SELECT ''yes''', 'SELECT ''no''')"
    )
    assert explain(conn, built) == expected
    literal = {
        "node_type": "THEN",
        "left_node": {
            "node_type": "THEN",
            "left_node": {"node_type": "SQL", "query": "SELECT 1", "result_name": "a"},
            "right_node": {"node_type": "SQL", "query": "SELECT 2"},
            "result_name": "b",
        },
        "right_node": {
            "node_type": "IF",
            "left_node": {"node_type": "SQL", "query": "SELECT 'yes'"},
            "right_node": {"node_type": "SQL", "query": "SELECT 'no'"},
            "condition_node": {"node_type": "SQL", "query": "SELECT $a > 0"},
        },
    }
    assert explain_text(conn, json.dumps(literal)) == expected


def test_race_example(conn: psycopg.Connection) -> None:
    expected = padded(
        "RACE",
        "    ║ branch 1:",
        "      ├─SQL: SELECT 'winner'",
        "    ║ branch 2:",
        "      └─SLEEP 30s",
    )
    assert explain(conn, "'SELECT ''winner''' | df.sleep(30)") == expected
    literal = (
        '{"node_type":"RACE","left_node":{"node_type":"SQL","query":"SELECT \'winner\'"},'
        '"right_node":{"node_type":"SLEEP","query":"30"}}'
    )
    assert explain_text(conn, literal) == expected


def test_while_loop_example(conn: psycopg.Connection) -> None:
    expected = padded(
        "LOOP (while)",
        "    ↻ body:",
        "      └─SQL: SELECT process_batch()",
        "      → IF",
        "          ? condition:",
        "            └─SQL: SELECT true",
        "          ✓ then:",
        '            └─BREAK \'{"status": "done"}\'',
        "          ✗ else:",
        "            └─SLEEP 5s",
        "    ? while:",
        "      └─SQL: SELECT count(*) > 0 FROM q",
    )
    built = (
        "df.loop('SELECT process_batch()' ~> "
        "df.if('SELECT true', df.break('{\"status\": \"done\"}'), df.sleep(5)), "
        "'SELECT count(*) > 0 FROM q')"
    )
    assert explain(conn, built) == expected


def test_compound_branches_and_sequences_inside_a_join(conn: psycopg.Connection) -> None:
    expected = padded(
        "JOIN (3)",
        "    ║ branch 1:",
        "      ├─IF",
        "      │   ? condition:",
        "      │     └─SQL: SELECT true",
        "      │   ✓ then:",
        "      │     └─SQL: SELECT 1",
        "      │   ✗ else:",
        "      │     └─SQL: SELECT 2",
        "    ║ branch 2:",
        "      ├─SQL: SELECT 'b'",
        "      → SQL: SELECT 'c'",
        "    ║ branch 3:",
        "      └─RACE |=> 'r'",
        "          ║ branch 1:",
        "            ├─SIGNAL 'go'",
        "          ║ branch 2:",
        "            └─SLEEP 1s",
    )
    built = (
        "df.join3(df.if('SELECT true', 'SELECT 1', 'SELECT 2'), "
        "'SELECT ''b''' ~> 'SELECT ''c''', "
        "(df.wait_for_signal('go') | df.sleep(1)) |=> 'r')"
    )
    assert explain(conn, built) == expected


def test_compound_elements_of_a_sequence_indent_from_the_sequence(
    conn: psycopg.Connection,
) -> None:
    expected = padded(
        "IF",
        "    ? condition:",
        "      └─SQL: SELECT true",
        "    ✓ then:",
        "      └─SQL: SELECT 1",
        "      → LOOP (infinite)",
        "          ↻ body:",
        "            └─SLEEP 1s",
        "    ✗ else:",
        "      └─SQL: SELECT 2",
        "→ SQL: SELECT 9",
    )
    built = "df.if('SELECT true', 'SELECT 1' ~> df.loop(df.sleep(1)), 'SELECT 2') ~> 'SELECT 9'"
    assert explain(conn, built) == expected


def test_if_rows_has_no_condition_section(conn: psycopg.Connection) -> None:
    expected = padded(
        "IF",
        "    ✓ then:",
        "      └─SQL: SELECT 1",
        "    ✗ else:",
        "      └─SQL: SELECT 2",
    )
    assert explain(conn, "df.if_rows('d', 'SELECT 1', 'SELECT 2')") == expected


def test_a_long_chain_has_one_arrow_per_later_step(conn: psycopg.Connection) -> None:
    steps = " ~> ".join(f"'SELECT {i}'" for i in range(1, 131))
    text = explain(conn, steps)
    assert text.count("→") == 129
    assert len(text.splitlines()) == 130
    assert len({len(line) for line in text.splitlines()}) == 1


# ---------------------------------------------------------------------------------------
# Dry-run: labels and truncation
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Mode selection and error texts
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Live mode and inferred statuses on hand-written instances
# ---------------------------------------------------------------------------------------


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


def test_live_completed_if(conn: psycopg.Connection) -> None:
    instance_id = completed_if(conn)
    tree = padded(
        "IF ✓",
        "    ? condition:",
        "      └─SQL: SELECT true ✓",
        "    ✓ then:",
        "      └─SQL: SELECT 1 ✓",
        "    ✗ else:",
        "      └─SQL: SELECT 2 ⊘",
    )
    assert explain_text(conn, instance_id) == (
        f"Instance: {instance_id} (if-demo)\nStatus:   ✓ Completed\nOutput:   {ONE}\n\n{tree}"
    )
    assert explain_text(conn, f"  {instance_id}\n") == explain_text(conn, instance_id)
    assert inferred(conn, instance_id) == {
        "aa000001": ("completed", "completed", None),
        "aa000002": ("completed", "completed", None),
        "aa000003": ("completed", "completed", None),
        "aa000004": ("pending", "skipped", "aa000001"),
    }


def test_live_hello_world_matches_the_walkthrough_checks(conn: psycopg.Connection) -> None:
    output = '{"rows":[{"message":"Hello, durable world!"}],"row_count":1}'
    instance_id = insert_instance(
        conn,
        [
            Node("bb000001", "SQL", "SELECT 'Hello, durable world!' AS message", status="completed",
                 result=json.loads(output), stamp="{i}::1"),
        ],
        status="completed",
        executions=[("Completed", output)],
    )  # fmt: skip
    text = explain_text(conn, instance_id)
    assert text == (
        f"Instance: {instance_id}\nStatus:   ✓ Completed\n"
        'Output:   {"rows":[{"message":"Hello, durable world!"}],"row_count":1}\n\n'
        "SQL: SELECT 'Hello, durable world!' AS message ✓    "
    )


def test_live_failed_then_skips_the_right_side(conn: psycopg.Connection) -> None:
    error = "SQL execution failed: error returned from database: division by zero"
    instance_id = insert_instance(
        conn,
        [
            Node("cc000001", "THEN", None, "cc000002", "cc000003", "failed", error, "{i}::1"),
            Node("cc000002", "SQL", "SELECT 1/0", status="failed", result=error, stamp="{i}::1"),
            Node("cc000003", "SQL", "SELECT 2"),
        ],
        status="failed",
        executions=[("Failed", error)],
        label="boom",
    )  # fmt: skip
    assert len(error.encode()) > 60
    assert explain_text(conn, instance_id) == (
        f"Instance: {instance_id} (boom)\nStatus:   ✗ Failed\n"
        f"Output:   {error[:57]}...\n\n" + padded("SQL: SELECT 1/0 ✗", "→ SQL: SELECT 2 ⊘")
    )
    assert inferred(conn, instance_id) == {
        "cc000001": ("failed", "failed", None),
        "cc000002": ("failed", "failed", None),
        "cc000003": ("pending", "skipped", "cc000001"),
    }


def test_live_race_with_a_running_loser(conn: psycopg.Connection) -> None:
    slept = {"slept": True, "seconds": 1}
    instance_id = insert_instance(
        conn,
        [
            Node("dd000001", "RACE", None, "dd000002", "dd000003", "completed", slept, "{i}::1"),
            Node("dd000002", "SQL", "SELECT pg_sleep(60)", status="running",
                 stamp="{i}::1::dd000002::1"),
            Node("dd000003", "SLEEP", "1", status="completed", result=slept,
                 stamp="{i}::1::dd000003::1"),
        ],
        status="completed",
        executions=[("Completed", '{"slept": true, "seconds": 1}')],
    )  # fmt: skip
    tree = padded(
        "RACE ✓",
        "    ║ branch 1:",
        "      ├─SQL: SELECT pg_sleep(60) ⊘",
        "    ║ branch 2:",
        "      └─SLEEP 1s ✓",
    )
    assert explain_text(conn, instance_id).endswith("\n\n" + tree)
    assert inferred(conn, instance_id) == {
        "dd000001": ("completed", "completed", None),
        "dd000002": ("running", "skipped", "dd000001"),
        "dd000003": ("completed", "completed", None),
    }


def test_live_race_loser_that_finished_keeps_its_status(conn: psycopg.Connection) -> None:
    error = "Loop branch cancelled after losing RACE"
    instance_id = insert_instance(
        conn,
        [
            Node("ee000001", "RACE", None, "ee000002", "ee000004", "completed", ROWS_ONE,
                 "{i}::1"),
            Node("ee000002", "LOOP", None, "ee000003", status="failed", result=error,
                 stamp="{i}::1::ee000002::4"),
            Node("ee000003", "SLEEP", "1", status="running", stamp="{i}::1::ee000002::4"),
            Node("ee000004", "SQL", "SELECT 1", status="completed", result=ROWS_ONE,
                 stamp="{i}::1::ee000004::1"),
        ],
        status="completed",
        executions=[("Completed", ONE)],
    )  # fmt: skip
    assert inferred(conn, instance_id) == {
        "ee000001": ("completed", "completed", None),
        "ee000002": ("failed", "failed", None),
        "ee000003": ("running", "skipped", "ee000002"),
        "ee000004": ("completed", "completed", None),
    }


def test_live_root_loop_previous_iteration_is_pending(conn: psycopg.Connection) -> None:
    instance_id = insert_instance(
        conn,
        [
            Node("ff000001", "LOOP", None, "ff000002", status="running", stamp="{i}::3"),
            Node("ff000002", "THEN", None, "ff000003", "ff000004", "running", stamp="{i}::3"),
            Node("ff000003", "SQL", "SELECT 1", status="completed", result=ROWS_ONE,
                 stamp="{i}::3"),
            Node("ff000004", "SQL", "SELECT 2", status="completed", result=ROWS_ONE,
                 stamp="{i}::2"),
        ],
        status="running",
        executions=[("ContinuedAsNew", "{}"), ("ContinuedAsNew", "{}"), ("Running", None)],
    )  # fmt: skip
    tree = padded(
        "LOOP (infinite) ⏳",
        "    ↻ body:",
        "      └─SQL: SELECT 1 ✓",
        "      → SQL: SELECT 2 ○",
    )
    assert explain_text(conn, instance_id) == (
        f"Instance: {instance_id}\nStatus:   ⏳ Running\n\n{tree}"
    )
    assert inferred(conn, instance_id) == {
        "ff000001": ("running", "running", None),
        "ff000002": ("running", "running", None),
        "ff000003": ("completed", "completed", None),
        "ff000004": ("completed", "pending", "ff000001"),
    }


def test_live_non_root_loop_earlier_iteration_is_skipped(conn: psycopg.Connection) -> None:
    # 'SELECT 0' ~> df.loop(df.if(cond, df.break(), 'work')): the last iteration (3) broke
    # out; 'work' last ran in iteration 2 of the loop's child orchestration.
    child = "{i}::1::ab000003"
    instance_id = insert_instance(
        conn,
        [
            Node("ab000001", "THEN", None, "ab000002", "ab000003", "completed", None, "{i}::1"),
            Node("ab000002", "SQL", "SELECT 0", status="completed", result=ROWS_ONE,
                 stamp="{i}::1"),
            Node("ab000003", "LOOP", None, "ab000004", status="completed", stamp="{i}::1"),
            Node("ab000004", "IF", '{"condition_node":"ab000005"}', "ab000006", "ab000007",
                 "completed", None, child + "::3"),
            Node("ab000005", "SQL", "SELECT done FROM t", status="completed", result=ROWS_ONE,
                 stamp=child + "::3"),
            Node("ab000006", "BREAK", '{"break_value":null}', status="completed",
                 stamp=child + "::3"),
            Node("ab000007", "SQL", "work", status="completed", result=ROWS_ONE,
                 stamp=child + "::2"),
        ],
        status="completed",
        executions=[("Completed", "null")],
    )  # fmt: skip
    states = inferred(conn, instance_id)
    assert states["ab000007"] == ("completed", "skipped", "ab000004")
    assert all(s[0] == s[1] for k, s in states.items() if k != "ab000007")
    assert explain_text(conn, instance_id).endswith(
        "\n\n"
        + padded(
            "SQL: SELECT 0 ✓",
            "→ LOOP (infinite) ✓",
            "    ↻ body:",
            "      └─IF ✓",
            "          ? condition:",
            "            └─SQL: SELECT done FROM t ✓",
            "          ✓ then:",
            "            └─BREAK ✓",
            "          ✗ else:",
            "            └─SQL: work ⊘",
        )
    )


def test_nested_loop_generations_are_per_outer_generation(conn: psycopg.Connection) -> None:
    # @> ('SELECT 0' ~> df.loop('x' ~> 'y')): in outer iteration 1 the inner loop reached
    # its generation 5; outer iteration 2 restarted it at generation 1, where 'x' has run
    # and 'y' not yet (its row still holds iteration 1's result).
    instance_id = insert_instance(
        conn,
        [
            Node("ba000001", "LOOP", None, "ba000002", status="running", stamp="{i}::2"),
            Node("ba000002", "THEN", None, "ba000003", "ba000004", "running", stamp="{i}::2"),
            Node("ba000003", "SQL", "SELECT 0", status="completed", result=ROWS_ONE,
                 stamp="{i}::2"),
            Node("ba000004", "LOOP", None, "ba000005", status="running", stamp="{i}::2"),
            Node("ba000005", "THEN", None, "ba000006", "ba000007", "running",
                 stamp="{i}::2::ba000004::1"),
            Node("ba000006", "SQL", "x", status="completed", result=ROWS_ONE,
                 stamp="{i}::2::ba000004::1"),
            Node("ba000007", "SQL", "y", status="completed", result=ROWS_ONE,
                 stamp="{i}::1::ba000004::5"),
        ],
        status="running",
        executions=[("ContinuedAsNew", "{}"), ("Running", None)],
    )  # fmt: skip
    states = inferred(conn, instance_id)
    assert states["ba000006"] == ("completed", "completed", None)
    assert states["ba000007"] == ("completed", "pending", "ba000005")
    assert explain_text(conn, instance_id).endswith(
        "\n\n"
        + padded(
            "LOOP (infinite) ⏳",
            "    ↻ body:",
            "      └─SQL: SELECT 0 ✓",
            "      → LOOP (infinite) ⏳",
            "          ↻ body:",
            "            └─SQL: x ✓",
            "            → SQL: y ○",
        )
    )


def test_clean_run_inferred_equals_stored(conn: psycopg.Connection) -> None:
    pair = [ROWS_ONE, ROWS_ONE]
    instance_id = insert_instance(
        conn,
        [
            Node("ac000001", "THEN", None, "ac000002", "ac000005", "completed", ROWS_ONE,
                 "{i}::1", name="t"),
            Node("ac000002", "JOIN", None, "ac000003", "ac000004", "completed", pair, "{i}::1"),
            Node("ac000003", "SQL", "SELECT 1", status="completed", result=ROWS_ONE,
                 stamp="{i}::1::ac000003::1", name="a"),
            Node("ac000004", "SQL", "SELECT 1", status="completed", result=ROWS_ONE,
                 stamp="{i}::1::ac000004::1"),
            Node("ac000005", "SQL", "SELECT 1", status="completed", result=ROWS_ONE,
                 stamp="{i}::1"),
        ],
        status="completed",
        executions=[("Completed", ONE)],
    )  # fmt: skip
    states = inferred(conn, instance_id)
    assert len(states) == 5
    assert all(stored == shown and ancestor is None for stored, shown, ancestor in states.values())
    assert explain_text(conn, instance_id).endswith(
        "\n\n"
        + padded(
            "JOIN (2) ✓",
            "    ║ branch 1:",
            "      ├─SQL: SELECT 1 |=> 'a' ✓",
            "    ║ branch 2:",
            "      └─SQL: SELECT 1 ✓",
            "→ SQL: SELECT 1 ✓",
        )
    )


def test_live_header_without_executions_uses_the_df_status(conn: psycopg.Connection) -> None:
    instance_id = insert_instance(
        conn, [Node("ad000001", "SLEEP", "10")], status="pending", label=""
    )
    assert explain_text(conn, instance_id) == (
        f"Instance: {instance_id} ()\nStatus:   ○ pending\n\nSLEEP 10s ○    "
    )
    cancelled = insert_instance(conn, [Node("ad000001", "SLEEP", "10")], status="cancelled")
    assert explain_text(conn, cancelled).split("\n")[1] == "Status:   ✗ cancelled"


def test_unknown_instances(conn: psycopg.Connection) -> None:
    unknown = secrets.token_hex(4)
    assert explain_text(conn, unknown) == f"Instance '{unknown}' not found"
    assert explain_text(conn, "DEADBEEF") == "Instance 'DEADBEEF' not found"
    assert conn.execute("SELECT * FROM df.instance_nodes(%s)", (unknown,)).fetchall() == []
    assert conn.execute("SELECT * FROM df.instance_nodes(%s, 5)", (unknown,)).fetchall() == []
    assert conn.execute("SELECT * FROM df.instance_nodes(NULL)").fetchall() == []
    assert conn.execute("SELECT * FROM df._inferred_statuses(%s)", (unknown,)).fetchall() == []


# ---------------------------------------------------------------------------------------
# df.instance_nodes shapes
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Row-level security: users inspect only their own instances
# ---------------------------------------------------------------------------------------


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
