"""df.explain's live mode and inferred statuses (spec §3.6, §5.5) on instances written by
hand as the admin, exactly as the engine would leave them, so no engine is needed."""

from __future__ import annotations

import json
import secrets

import psycopg

from tests.support.inspection import (
    ONE,
    ROWS_ONE,
    Node,
    completed_if,
    explain_text,
    inferred,
    insert_instance,
    padded,
)


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
