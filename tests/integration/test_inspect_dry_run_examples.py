"""df.explain in dry-run mode (spec §7): the examples, from literal Durofut JSON and from the
builders."""

from __future__ import annotations

import json

import psycopg

from tests.support.inspection import explain, explain_text, padded


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
