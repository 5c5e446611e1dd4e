"""Graph builders on hand-written Durofut JSON: auto-wrap as SQL, canonical re-serialization,
invalid JSON refused."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support.builders import Conn, dumps, failure, node, sql_node, value


def test_hand_written_children_are_re_emitted_canonically(conn: Conn) -> None:
    hand_written = json.dumps(
        {
            "result_name": "r",
            "extra": {"ignored": [1, 2]},  # unknown keys are dropped, as serde does
            "right_node": {"query": 'é "q" \\ \n\t\u0001', "node_type": "SQL"},
            "extra_nodes": [
                {"query": "x", "node_type": "SQL", "left_node": None},
                {"node_type": "FOO"},  # unknown types inside a graph are kept for df.start
            ],
            "node_type": "JOIN",
            "left_node": {
                "node_type": "THEN",
                "right_node": {"node_type": "SQL", "query": "z"},
                "left_node": {"node_type": "SQL", "query": "y"},
                "query": None,
            },
            "condition_node": None,
        },
        indent=4,
    )
    expected_child = node(
        "JOIN",
        left_node=node("THEN", left_node=sql_node("y"), right_node=sql_node("z")),
        right_node=sql_node('é "q" \\ \n\t\u0001'),
        extra_nodes=[sql_node("x"), node("FOO")],
        result_name="r",
    )
    got = value(conn, "SELECT df.seq(%s, 'next')", (hand_written,))
    assert got == dumps(node("THEN", left_node=expected_child, right_node=sql_node("next")))
    # The canonical text is a fixed point.
    assert value(conn, "SELECT df.seq(%s, 'next')", (dumps(expected_child),)) == got


def test_well_formed_children_in_another_key_order_are_re_emitted_canonically(
    conn: Conn,
) -> None:
    # No unknown key and no null: the whole-tree (jsonb re-sort) path, not the node-by-node one.
    hand_written = """ {"extra_nodes": [{"query": "c", "node_type": "SQL"},
                                       {"result_name": "d", "query": "d", "node_type": "SQL"}],
                        "result_name": "j", "right_node": {"query": "b", "node_type": "SQL"},
                        "node_type": "JOIN",  "left_node": {"node_type": "IF",
                            "condition_node": {"node_type": "SQL", "query": "x"},
                            "right_node": {"query": "e", "node_type": "SQL"},
                            "left_node": {"query": "t", "node_type": "SQL"}}} """
    expected = node(
        "JOIN",
        left_node=node(
            "IF",
            left_node=sql_node("t"),
            right_node=sql_node("e"),
            condition_node=sql_node("x"),
        ),
        right_node=sql_node("b"),
        extra_nodes=[sql_node("c"), sql_node("d", "d")],
        result_name="j",
    )
    assert value(conn, "SELECT df.loop(%s)", (hand_written,)) == dumps(
        node("LOOP", left_node=expected)
    )


def test_json_look_alikes_inside_strings_survive(conn: Conn) -> None:
    # Query text that looks like the serializer's own key patterns must come through intact.
    tricky = [
        """SELECT '{"node_type": "SQL"}', '{"a": 1}, {"b": 2}' -- , "g": """,
        '{"query": "x"}, {"a": ',
        "ends with a backslash \\",
        '\\", "query": "injected',
    ]
    expr = "df.join3(%s, %s, %s) ~> (%s |=> 'n')"
    expected = node(
        "THEN",
        left_node=node(
            "JOIN",
            left_node=sql_node(tricky[0]),
            right_node=sql_node(tricky[1]),
            extra_nodes=[sql_node(tricky[2])],
        ),
        right_node=sql_node(tricky[3], "n"),
    )
    got = value(conn, f"SELECT {expr}", tuple(tricky))
    assert got == dumps(expected)
    assert value(conn, "SELECT df.loop(%s)", (got,)) == dumps(node("LOOP", left_node=expected))


def test_internal_helpers(conn: Conn) -> None:
    assert value(conn, "SELECT df._as_node('SELECT 1') = %s::jsonb", (dumps(sql_node("SELECT 1")),))
    canonical = "SELECT df._clean_durofut_text(df._durofut_node(%s))"  # parsed, then written
    junk = '{"query": "q", "junk": 1, "node_type": "SQL"}'
    assert value(conn, canonical, (junk,)) == dumps(sql_node("q"))
    assert failure(conn, canonical % '\'{"query": "q"}\'') == (
        "22P02",
        "Invalid Durofut JSON: failed to deserialize workflow step: missing field `node_type`",
    )


def test_empty_extra_nodes_and_nulls_are_omitted(conn: Conn) -> None:
    got = value(
        conn,
        """SELECT df.loop('{"node_type": "JOIN", "left_node": {"node_type": "SQL", "query": "a"},
                            "right_node": null, "extra_nodes": [], "query": null}')""",
    )
    assert got == dumps(node("LOOP", left_node=node("JOIN", left_node=sql_node("a"))))


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 1",
        '{"query": "x"}',  # JSON without node_type
        '{"node_type": "FOO", "query": "x"}',  # unknown node_type string
        '["node_type"]',
        '"SELECT 1"',
        "{not json",
        "  ",
        "",
    ],
)
def test_other_text_is_wrapped_verbatim_as_sql(conn: Conn, text: str) -> None:
    got = value(conn, "SELECT df.seq(%s, 'b')", (text,))
    assert got == dumps(node("THEN", left_node=sql_node(text), right_node=sql_node("b")))


def test_every_valid_node_type_is_used_as_a_node(conn: Conn) -> None:
    types = value(conn, "SELECT df._node_types()")
    assert types == [
        "SQL", "THEN", "IF", "JOIN", "LOOP", "BREAK", "RACE", "SLEEP", "WAIT_SCHEDULE",
        "HTTP", "HTTP_MULTIPART", "SIGNAL", "RETRY", "TIMEOUT", "COMPENSATED",
    ]  # fmt: skip
    for node_type in types:
        child = value(conn, "SELECT df.loop(%s)", (json.dumps({"node_type": node_type}),))
        assert child == dumps(node("LOOP", left_node=node(node_type))), node_type


def test_a_long_chain_stays_exact(conn: Conn) -> None:
    steps = [f"SELECT {i}" for i in range(150)]
    expr = " ~> ".join(f"'{s}'" for s in steps) + " |=> 'last'"
    tree = sql_node(steps[0])
    for step in steps[1:]:
        tree = node("THEN", left_node=tree, right_node=sql_node(step))
    tree["result_name"] = "last"
    assert value(conn, f"SELECT {expr}") == dumps(tree)


def test_serializer_escapes_like_serde(conn: Conn) -> None:
    text = '"\\/\b\f\n\r\t\u0001x\u001f\u007f é ü 中 😀'
    got = value(conn, "SELECT df.sql(%s)", (text,))
    assert got == dumps(sql_node(text))
    assert "\\u001f" in got and "é ü 中 😀" in got


INVALID_DUROFUTS = {
    "query_not_string": (
        '{"node_type": "SQL", "query": 5}',
        "invalid type: integer `5`, expected a string",
    ),
    "result_name_not_string": (
        '{"node_type": "SQL", "result_name": true}',
        "invalid type: boolean `true`, expected a string",
    ),
    "float_query": (
        '{"node_type": "SQL", "query": 1.5}',
        "invalid type: floating point `1.5`, expected a string",
    ),
    "node_type_not_string": ('{"node_type": 7}', "invalid type: integer `7`, expected a string"),
    "node_type_null": ('{"node_type": null}', "invalid type: null, expected a string"),
    "node_type_array": ('{"node_type": ["SQL"]}', "invalid type: sequence, expected a string"),
    "child_not_object": (
        '{"node_type": "THEN", "left_node": "SELECT 1"}',
        "Durofut children must be JSON objects",
    ),
    "condition_not_object": (
        '{"node_type": "IF", "condition_node": [1]}',
        "condition_node must be a Durofut JSON object",
    ),
    "extra_entry_not_object": (
        '{"node_type": "JOIN", "extra_nodes": [{"node_type": "SQL"}, 1]}',
        "extra_nodes entries must be Durofut JSON objects",
    ),
    "extra_not_array": (
        '{"node_type": "JOIN", "extra_nodes": {}}',
        "invalid type: map, expected a sequence",
    ),
    "nested_missing_node_type": (
        '{"node_type": "THEN", "right_node": {"left_node": {"query": "x"}, "node_type": "X"}}',
        "missing field `node_type`",
    ),
    "nested_bad_query": (
        '{"node_type": "LOOP", "left_node": {"node_type": "SQL", "query": {"a": 1}}}',
        "invalid type: map, expected a string",
    ),
}


@pytest.mark.parametrize("text, message", INVALID_DUROFUTS.values(), ids=INVALID_DUROFUTS.keys())
def test_invalid_durofut_json_is_refused(conn: Conn, text: str, message: str) -> None:
    expected = ("22P02", f"Invalid Durofut JSON: failed to deserialize workflow step: {message}")
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT df.seq(%s, 'b')", (text,))
    assert (caught.value.sqlstate, caught.value.diag.message_primary) == expected
    # Every composer applies the same rule.
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT df.if('c', 't', %s)", (text,))
    assert caught.value.diag.message_primary == expected[1]
