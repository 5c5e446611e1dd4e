"""Graph builders and operators (catalog builders.sql, operators.sql): JSON, errors, precedence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[tuple[Any, ...]]

# Shorthands for the expected JSON of spec §4.
A = '{"node_type":"SQL","query":"a"}'
B = '{"node_type":"SQL","query":"b"}'
C = '{"node_type":"SQL","query":"c"}'


@pytest.fixture
def conn(catalog_dsn: str) -> Iterator[Conn]:
    """An autocommit session on the migrated catalog database."""
    with psycopg.connect(catalog_dsn, autocommit=True) as connection:
        yield connection


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


# ---------------------------------------------------------------------------------------
# Spec §4: every example, through the functions and through the operators
# ---------------------------------------------------------------------------------------

SPEC_EXAMPLES = {
    "sql": ("SELECT df.sql('SELECT 1')", '{"node_type":"SQL","query":"SELECT 1"}'),
    "seq": (
        "SELECT df.seq('SELECT 1', 'SELECT 2')",
        '{"node_type":"THEN","left_node":{"node_type":"SQL","query":"SELECT 1"},'
        '"right_node":{"node_type":"SQL","query":"SELECT 2"}}',
    ),
    "seq_op": (
        "SELECT 'SELECT 1' ~> 'SELECT 2'",
        '{"node_type":"THEN","left_node":{"node_type":"SQL","query":"SELECT 1"},'
        '"right_node":{"node_type":"SQL","query":"SELECT 2"}}',
    ),
    "as": (
        "SELECT df.as('SELECT 1', 'x')",
        '{"node_type":"SQL","query":"SELECT 1","result_name":"x"}',
    ),
    "as_op": (
        "SELECT 'SELECT 1' |=> 'x'",
        '{"node_type":"SQL","query":"SELECT 1","result_name":"x"}',
    ),
    "if": (
        "SELECT df.if('c', 'a', 'b')",
        f'{{"node_type":"IF","left_node":{A},"right_node":{B},"condition_node":{C}}}',
    ),
    "if_op": (
        "SELECT 'c' ?> 'a' !> 'b'",
        f'{{"node_type":"IF","left_node":{A},"right_node":{B},"condition_node":{C}}}',
    ),
    "if_rows": (
        "SELECT df.if_rows('d', 'a', 'b')",
        f'{{"node_type":"IF","left_node":{A},"right_node":{B},'
        '"query":"{\\"condition_type\\":\\"result_has_rows\\",\\"result_name\\":\\"d\\"}"}',
    ),
    "join": (
        "SELECT df.join('a', 'b')",
        f'{{"node_type":"JOIN","left_node":{A},"right_node":{B}}}',
    ),
    "join_op": ("SELECT 'a' & 'b'", f'{{"node_type":"JOIN","left_node":{A},"right_node":{B}}}'),
    "join3": (
        "SELECT df.join3('a', 'b', 'c')",
        f'{{"node_type":"JOIN","left_node":{A},"right_node":{B},"extra_nodes":[{C}]}}',
    ),
    "race": (
        "SELECT df.race('a', 'b')",
        f'{{"node_type":"RACE","left_node":{A},"right_node":{B}}}',
    ),
    "race_op": ("SELECT 'a' | 'b'", f'{{"node_type":"RACE","left_node":{A},"right_node":{B}}}'),
    "loop": ("SELECT df.loop('b')", f'{{"node_type":"LOOP","left_node":{B}}}'),
    "loop_op": ("SELECT @> 'b'", f'{{"node_type":"LOOP","left_node":{B}}}'),
    "loop_condition": (
        "SELECT df.loop('b', 'c')",
        f'{{"node_type":"LOOP","left_node":{B},"condition_node":{C}}}',
    ),
    "loop_continue_on_failure": (
        "SELECT df.loop('b', 'c', continue_on_failure => true)",
        f'{{"node_type":"LOOP","left_node":{B},"condition_node":{C},'
        '"query":"{\\"continue_on_failure\\":true}"}',
    ),
    "break": ("SELECT df.break()", '{"node_type":"BREAK","query":"{\\"break_value\\":null}"}'),
    "break_value": (
        "SELECT df.break('x')",
        '{"node_type":"BREAK","query":"{\\"break_value\\":\\"x\\"}"}',
    ),
    "sleep": ("SELECT df.sleep(60)", '{"node_type":"SLEEP","query":"60"}'),
    "wait_for_schedule": (
        "SELECT df.wait_for_schedule('0 * * * *')",
        '{"node_type":"WAIT_SCHEDULE","query":"{\\"cron_expr\\":\\"0 * * * *\\"}"}',
    ),
    "wait_for_signal": (
        "SELECT df.wait_for_signal('a', 3600)",
        '{"node_type":"SIGNAL","query":"{\\"signal_name\\":\\"a\\",\\"timeout_seconds\\":3600}"}',
    ),
    "wait_for_signal_no_timeout": (
        "SELECT df.wait_for_signal('a')",
        '{"node_type":"SIGNAL","query":"{\\"signal_name\\":\\"a\\",\\"timeout_seconds\\":null}"}',
    ),
    "http": (
        "SELECT df.http('https://example.com/x', 'get')",
        '{"node_type":"HTTP","query":"{\\"url\\":\\"https://example.com/x\\",\\"method\\":\\"GET\\",'
        '\\"body\\":null,\\"headers\\":null,\\"timeout_seconds\\":30}"}',
    ),
    "http_multipart": (
        "SELECT df.http_multipart('https://example.com/up', 'POST', "
        """'[{"name": "f", "data_b64": "aGk=", "filename": "a.txt"}]')""",
        '{"node_type":"HTTP_MULTIPART","query":"{\\"url\\":\\"https://example.com/up\\",'
        '\\"method\\":\\"POST\\",\\"parts\\":[{\\"name\\":\\"f\\",\\"data_b64\\":\\"aGk=\\",'
        '\\"filename\\":\\"a.txt\\"}],\\"headers\\":null,\\"timeout_seconds\\":30}"}',
    ),
}


@pytest.mark.parametrize("sql, expected", SPEC_EXAMPLES.values(), ids=SPEC_EXAMPLES.keys())
def test_spec_examples_are_byte_exact(conn: Conn, sql: str, expected: str) -> None:
    assert value(conn, sql) == expected


def test_identical_calls_give_identical_text(conn: Conn) -> None:
    graph = "(('SELECT 1' |=> 'x') & 'SELECT 2') ~> df.sleep(5) ~> ('c' ?> 't' !> 'e')"
    first, second = conn.execute(f"SELECT {graph}, {graph}").fetchone() or ()
    assert first == second


def test_http_embeds_headers_and_body_compactly_in_jsonb_key_order(conn: Conn) -> None:
    got = value(
        conn,
        """SELECT df.http('http://h/p', 'post', 'a "b"', '{"X-Key": "v", "A": ["1", "2"]}', 5)""",
    )
    query = {
        "url": "http://h/p",
        "method": "POST",
        "body": 'a "b"',
        "headers": {"A": ["1", "2"], "X-Key": "v"},  # jsonb orders shorter keys first
        "timeout_seconds": 5,
    }
    assert got == dumps(node("HTTP", query=dumps(query)))


def test_partial_if_is_jsonb_text(conn: Conn) -> None:
    assert value(conn, "SELECT 'SELECT true' ?> 'SELECT 1'") == (
        '{"condition": "SELECT true", "_partial_if": true, "then_branch": "SELECT 1"}'
    )


# ---------------------------------------------------------------------------------------
# Operators: untyped literals resolve to them, PostgreSQL's own precedence, built-ins intact
# ---------------------------------------------------------------------------------------

PRECEDENCE = {
    # All share one precedence level and are left-associative (spec §3.2).
    "as_binds_left": (
        "'a' |=> 'x' ~> 'b' |=> 'y' ~> 'c'",
        node(
            "THEN",
            left_node=node(
                "THEN",
                left_node=sql_node("a", "x"),
                right_node=sql_node("b"),
                result_name="y",
            ),
            right_node=sql_node("c"),
        ),
    ),
    "seq_then_join": (
        "'a' ~> 'b' & 'c'",
        node(
            "JOIN",
            left_node=node("THEN", left_node=sql_node("a"), right_node=sql_node("b")),
            right_node=sql_node("c"),
        ),
    ),
    "join_then_seq": (
        "'a' & 'b' ~> 'c'",
        node(
            "THEN",
            left_node=node("JOIN", left_node=sql_node("a"), right_node=sql_node("b")),
            right_node=sql_node("c"),
        ),
    ),
    "race_then_seq": (
        "'a' | 'b' ~> 'c'",
        node(
            "THEN",
            left_node=node("RACE", left_node=sql_node("a"), right_node=sql_node("b")),
            right_node=sql_node("c"),
        ),
    ),
    "prefix_loop_binds_tightest": (
        "@> 'a' ~> 'b'",
        node("THEN", left_node=node("LOOP", left_node=sql_node("a")), right_node=sql_node("b")),
    ),
    "parenthesized_loop": (
        "@> ('a' ~> 'b')",
        node("LOOP", left_node=node("THEN", left_node=sql_node("a"), right_node=sql_node("b"))),
    ),
    "loop_raced": (
        "@> ('a') | 'w'",
        node("RACE", left_node=node("LOOP", left_node=sql_node("a")), right_node=sql_node("w")),
    ),
    "join_named": (
        "'a' & 'b' |=> 'n'",
        node("JOIN", left_node=sql_node("a"), right_node=sql_node("b"), result_name="n"),
    ),
    "sequence_as_condition": (
        "'a' ~> 'c' ?> 't' !> 'e'",
        node(
            "IF",
            left_node=sql_node("t"),
            right_node=sql_node("e"),
            condition_node=node("THEN", left_node=sql_node("a"), right_node=sql_node("c")),
        ),
    ),
}


@pytest.mark.parametrize("expr, tree", PRECEDENCE.values(), ids=PRECEDENCE.keys())
def test_operator_precedence(conn: Conn, expr: str, tree: dict[str, Any]) -> None:
    assert value(conn, f"SELECT {expr}") == dumps(tree)


def test_operators_equal_the_functions(conn: Conn) -> None:
    pairs = [
        ("'a' ~> 'b'", "df.seq('a', 'b')"),
        ("'a' |=> 'n'", "df.as('a', 'n')"),
        ("'a' & 'b'", "df.join('a', 'b')"),
        ("'a' | 'b'", "df.race('a', 'b')"),
        ("'c' ?> 'a' !> 'b'", "df.if('c', 'a', 'b')"),
        ("@> 'a'", "df.loop('a')"),
    ]
    for operator, function in pairs:
        assert value(conn, f"SELECT ({operator}) = {function}"), operator


def test_if_then_followed_by_seq_cannot_take_else(conn: Conn) -> None:
    assert failure(conn, "SELECT 'cond' ?> 't' ~> 'x' !> 'e'") == (
        "22023",
        "Invalid if-then-else: left side of !> must be a ?> expression",
    )


def test_concatenation_binds_like_the_operators(conn: Conn) -> None:
    seq = dumps(node("THEN", left_node=sql_node("a"), right_node=sql_node("b")))
    assert value(conn, "SELECT 'a' ~> 'b' || 'c'") == seq + "c"


def test_untyped_literals_resolve_to_the_text_operators(conn: Conn) -> None:
    for expr in ("'a' & 'b'", "'a' | 'b'", "'SELECT 1' ~> 'SELECT 2'", "@> 'a'"):
        assert value(conn, f"SELECT pg_typeof({expr})::text") == "text", expr


def test_built_in_operators_still_work(conn: Conn) -> None:
    row = conn.execute(
        """SELECT ARRAY[1] @> ARRAY[1], '{"a":1}'::jsonb @> '{}', 6 & 3, 6 | 3,
                  (B'101' & B'011')::text, ('10.1.2.3'::inet & '255.0.0.0')::text,
                  int4range(1, 5) @> 3, '((0,0),2)'::circle @> '(1,1)'::point, 'a' || 'b'"""
    ).fetchone()
    assert row == (True, True, 2, 7, "001", "10.0.0.0/32", True, True, "ab")


def test_operators_live_in_public_with_functions_in_df(conn: Conn) -> None:
    rows = conn.execute(
        """SELECT oprname, oprkind, oprleft::regtype::text, oprright::regtype::text,
                  p.pronamespace::regnamespace::text || '.' || p.proname
             FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode
            WHERE oprnamespace = 'public'::regnamespace ORDER BY oprname"""
    ).fetchall()
    assert rows == [
        ("!>", "b", "text", "text", "df.if_else_op"),
        ("&", "b", "text", "text", "df.join"),
        ("<->", "b", "text", "text", "df.with_undo"),
        ("?>", "b", "text", "text", "df.if_then_op"),
        ("@>", "l", "-", "text", "df.loop_prefix_op"),
        ("|", "b", "text", "text", "df.race"),
        ("|=>", "b", "text", "text", "df.as_op"),
        ("~>", "b", "text", "text", "df.seq"),
    ]


def test_without_public_on_the_search_path_operators_need_qualification(conn: Conn) -> None:
    conn.execute("SET search_path = pg_catalog")
    assert failure(conn, "SELECT 'a'::text ~> 'b'::text")[0] == "42883"
    assert value(conn, "SELECT 'a' OPERATOR(public.~>) 'b'") == value(
        conn, "SELECT df.seq('a','b')"
    )


# ---------------------------------------------------------------------------------------
# Auto-wrap and canonical re-serialization of hand-written Durofut JSON
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Build-time argument errors
# ---------------------------------------------------------------------------------------

NOT_IDENTIFIER = "is not a valid identifier — must match [a-zA-Z_][a-zA-Z0-9_]*"

BUILD_ERRORS = {
    "as_empty": ("SELECT df.as('x', '')", "22023", "df.as: result name cannot be empty"),
    "as_digit": ("SELECT df.as('x', '1a')", "22023", f"df.as: result name '1a' {NOT_IDENTIFIER}"),
    "as_dash": ("SELECT 'x' |=> 'a-b'", "22023", f"df.as: result name 'a-b' {NOT_IDENTIFIER}"),
    "as_non_ascii": ("SELECT df.as('x', 'é')", "22023", f"df.as: result name 'é' {NOT_IDENTIFIER}"),
    "sleep_negative": ("SELECT df.sleep(-1)", "22023", "Sleep duration must be non-negative"),
    "signal_empty": ("SELECT df.wait_for_signal('')", "22023", "Signal name cannot be empty"),
    "signal_timeout_zero": (
        "SELECT df.wait_for_signal('s', 0)",
        "22023",
        "Timeout must be positive",
    ),
    "signal_timeout_negative": (
        "SELECT df.wait_for_signal('s', -5)",
        "22023",
        "Timeout must be positive",
    ),
    "signal_null_name": (
        "SELECT df.wait_for_signal(NULL)",
        "22004",
        "df.wait_for_signal: name cannot be NULL",
    ),
    "http_scheme": (
        "SELECT df.http('ftp://h/x')",
        "22023",
        "Blocked: unsupported URL scheme 'ftp'. Only http and https are allowed.",
    ),
    "http_scheme_lower_cased": (
        "SELECT df.http('FILE:///etc/passwd')",
        "22023",
        "Blocked: unsupported URL scheme 'file'. Only http and https are allowed.",
    ),
    "http_no_scheme": (
        "SELECT df.http('$url')",
        "22023",
        "Blocked: unsupported URL scheme '$url'. Only http and https are allowed.",
    ),
    "http_method": (
        "SELECT df.http('https://h', 'fetch')",
        "22023",
        "Invalid HTTP method: FETCH. Must be GET, POST, PUT, DELETE, or PATCH",
    ),
    "http_timeout": (
        "SELECT df.http('https://h', timeout_seconds => 0)",
        "22023",
        "Timeout must be positive",
    ),
    "http_null_url": ("SELECT df.http(NULL)", "22004", "df.http: url cannot be NULL"),
    "multipart_scheme": (
        "SELECT df.http_multipart('gopher://h', parts => '[{}]')",
        "22023",
        "Blocked: unsupported URL scheme 'gopher'. Only http and https are allowed.",
    ),
    "multipart_method": (
        "SELECT df.http_multipart('https://h', 'delete', '[{}]')",
        "22023",
        "Invalid HTTP method for multipart: DELETE. Must be POST, PUT, or PATCH",
    ),
    "multipart_timeout": (
        "SELECT df.http_multipart('https://h', 'POST', '[{}]', NULL, -1)",
        "22023",
        "Timeout must be positive",
    ),
    "multipart_no_parts": (
        "SELECT df.http_multipart('https://h')",
        "22023",
        "parts is required and cannot be NULL",
    ),
    "multipart_parts_object": (
        "SELECT df.http_multipart('https://h', parts => '{}')",
        "22023",
        "parts must be a JSON array of part objects",
    ),
    "multipart_parts_scalars": (
        "SELECT df.http_multipart('https://h', parts => '[1]')",
        "22023",
        "parts must be a JSON array of part objects",
    ),
    "multipart_parts_empty": (
        "SELECT df.http_multipart('https://h', parts => '[]')",
        "22023",
        "parts must contain at least one part",
    ),
    "loop_null_body": ("SELECT df.loop(NULL)", "22004", "df.loop: body cannot be NULL"),
    "else_without_then": (
        "SELECT 'SELECT 1' !> 'e'",
        "22P02",
        "invalid input syntax for type json",
    ),
    "else_after_json_without_partial_if": (
        """SELECT '{"condition": "c"}' !> 'e'""",
        "22023",
        "Invalid if-then-else: left side of !> must be a ?> expression",
    ),
}


@pytest.mark.parametrize("sql, sqlstate, message", BUILD_ERRORS.values(), ids=BUILD_ERRORS.keys())
def test_build_time_errors(conn: Conn, sql: str, sqlstate: str, message: str) -> None:
    assert failure(conn, sql) == (sqlstate, message)


def test_accepted_edge_values(conn: Conn) -> None:
    assert value(conn, "SELECT df.sleep(0)") == '{"node_type":"SLEEP","query":"0"}'
    assert value(conn, "SELECT df.as('x', '_A9')") == dumps(sql_node("x", "_A9"))
    # A URL template is checked when it is substituted, not at build time.
    template = value(conn, "SELECT df.http('{base}/x', 'DELETE')")
    assert json.loads(json.loads(template)["query"])["url"] == "{base}/x"
    # NULL for a defaulted argument means its default.
    http = json.loads(value(conn, "SELECT df.http('http://h', NULL, NULL, NULL, NULL)"))
    assert json.loads(http["query"]) == {
        "url": "http://h", "method": "POST", "body": None, "headers": None, "timeout_seconds": 30,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------
# Cron validation (pg_durable's cron crate on '0 ' || expr)
# ---------------------------------------------------------------------------------------

CRON_ACCEPTED = [
    "0 * * * *",
    "* * * * *",
    "*/15 9-17 1,15 jan-jun,DEC Mon-Fri",
    "30 2 */2 * *",
    "0 0 ? * sun",
    "0 0 * * 7",
    "0 0 * * 1-5",
    "5/15 * * * *",
    "0 12 * * Tuesday,thurs",
    "0 0 1 1 * 2030",
    "  0   0 * * *  ",
]


@pytest.mark.parametrize("expr", CRON_ACCEPTED)
def test_cron_accepted(conn: Conn, expr: str) -> None:
    got = value(conn, "SELECT df.wait_for_schedule(%s)", (expr,))
    assert got == dumps(node("WAIT_SCHEDULE", query=dumps({"cron_expr": expr})))


FIELD_COUNT = "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with a year)"

CRON_REJECTED = {
    "0 * * *": f"{FIELD_COUNT}, found 4",
    "0 0 1 1 * 2030 x": f"{FIELD_COUNT}, found 7",
    "": f"{FIELD_COUNT}, found 0",
    "@daily": f"{FIELD_COUNT}, found 1",
    "60 * * * *": "Minutes must be less than or equal to 59. ('60' specified.)",
    "* 24 * * *": "Hours must be less than or equal to 23. ('24' specified.)",
    "* * 0 * *": "Days of Month must be greater than or equal to 1. ('0' specified.)",
    "* * 32 * *": "Days of Month must be less than or equal to 31. ('32' specified.)",
    "* * * 13 *": "Months must be less than or equal to 12. ('13' specified.)",
    "* * * * 0": "Days of Week must be greater than or equal to 1. ('0' specified.)",
    "* * * * 8": "Days of Week must be less than or equal to 7. ('8' specified.)",
    "0 0 1 1 * 1969": "Years must be greater than or equal to 1970. ('1969' specified.)",
    "*/0 * * * *": "range step cannot be zero",
    "*/60 * * * *": "Minutes step must be between 1 and 59. ('60' specified.)",
    "5-1 * * * *": "Invalid range for Minutes: 5-1",
    "* * * * fri-mon": "Invalid named range for Days of Week: fri-mon",
    "mon * * * *": "The 'Minutes' field does not support using names. 'mon' specified.",
    "0 0 L * *": "The 'Days of Month' field does not support using names. 'L' specified.",
    "* * * foo *": "'foo' is not a valid month name.",
    "* * * * funday": "'funday' is not a valid day of the week.",
    "1,,2 * * * *": "cannot parse '' in the Minutes field",
    "1-fri * * * *": "cannot parse '1-fri' in the Minutes field",
    "? * * * *": "cannot parse '?' in the Minutes field",
    "mon/2 * * * *": "cannot parse 'mon/2' in the Minutes field",
    "1/2/3 * * * *": "cannot parse '1/2/3' in the Minutes field",
}


@pytest.mark.parametrize("expr, reason", CRON_REJECTED.items(), ids=CRON_REJECTED.keys())
def test_cron_rejected(conn: Conn, expr: str, reason: str) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT df.wait_for_schedule(%s)", (expr,))
    assert caught.value.sqlstate == "22023"
    assert caught.value.diag.message_primary == f"Invalid cron expression '{expr}': {reason}"


# ---------------------------------------------------------------------------------------
# Signatures, STRICTness, privileges
# ---------------------------------------------------------------------------------------

SIGNATURES = {
    "sql": ("query text", True),
    "seq": ("a text, b text", True),
    "as": ("fut text, name text", True),
    "join": ("a text, b text", True),
    "join3": ("a text, b text, c text", True),
    "race": ("a text, b text", True),
    "if": ("condition text, then_branch text, else_branch text", True),
    "if_rows": ("result_name text, then_branch text, else_branch text", True),
    "loop": (
        "body text, condition text DEFAULT NULL::text, continue_on_failure boolean DEFAULT false",
        False,
    ),
    "break": ("value text DEFAULT NULL::text", False),
    "sleep": ("seconds bigint", True),
    "wait_for_schedule": ("cron_expr text", True),
    "wait_for_signal": ("name text, timeout_seconds integer DEFAULT NULL::integer", False),
    "http": (
        "url text, method text DEFAULT 'POST'::text, body text DEFAULT NULL::text, "
        "headers jsonb DEFAULT NULL::jsonb, timeout_seconds integer DEFAULT 30",
        False,
    ),
    "http_multipart": (
        "url text, method text DEFAULT 'POST'::text, parts jsonb DEFAULT NULL::jsonb, "
        "headers jsonb DEFAULT NULL::jsonb, timeout_seconds integer DEFAULT 30",
        False,
    ),
    "as_op": ("fut text, name text", True),
    "if_then_op": ("condition text, then_branch text", True),
    "if_else_op": ("partial_if text, else_branch text", True),
    "loop_prefix_op": ("body text", True),
}


def test_signatures_and_strictness(conn: Conn) -> None:
    rows = conn.execute(
        """SELECT proname, pg_get_function_arguments(oid), proisstrict, prorettype::regtype::text
             FROM pg_proc WHERE pronamespace = 'df'::regnamespace AND proname = ANY(%s)""",
        (list(SIGNATURES),),
    ).fetchall()
    assert {name: (args, strict) for name, args, strict, _ in rows} == SIGNATURES
    assert {returns for *_, returns in rows} == {"text"}


STRICT_CALLS = [
    "df.sql(NULL)", "df.seq(NULL, 'b')", "df.seq('a', NULL)", "df.as('a', NULL)",
    "df.as(NULL, 'n')", "df.join('a', NULL)", "df.join3('a', 'b', NULL)", "df.race(NULL, 'b')",
    "df.if('c', 't', NULL)", "df.if_rows(NULL, 't', 'e')", "df.sleep(NULL)",
    "df.wait_for_schedule(NULL)", "'a' ~> NULL", "NULL |=> 'n'", "'a' & NULL", "NULL | 'b'",
    "'c' ?> NULL", "NULL !> 'e'", "@> NULL::text",
]  # fmt: skip


@pytest.mark.parametrize("call", STRICT_CALLS)
def test_strict_builders_return_null_for_null(conn: Conn, call: str) -> None:
    assert value(conn, f"SELECT {call}") is None


def test_non_strict_builders_take_null_optionals(conn: Conn) -> None:
    assert value(conn, "SELECT df.loop('b', NULL)") == f'{{"node_type":"LOOP","left_node":{B}}}'
    assert value(conn, "SELECT df.loop('b', NULL, NULL)") == value(conn, "SELECT df.loop('b')")
    assert value(conn, "SELECT df.break(NULL)") == value(conn, "SELECT df.break()")
    assert value(conn, "SELECT df.wait_for_signal('a', NULL)") == value(
        conn, "SELECT df.wait_for_signal('a')"
    )


def test_http_execute_is_revoked_from_public(conn: Conn) -> None:
    rows = conn.execute(
        """SELECT proname, coalesce(bool_or(a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
                                    true)
             FROM pg_proc p LEFT JOIN LATERAL aclexplode(p.proacl) a ON true
            WHERE pronamespace = 'df'::regnamespace AND proname IN ('http', 'http_multipart', 'seq')
            GROUP BY proname ORDER BY proname"""
    ).fetchall()
    # NULL proacl means the default (PUBLIC may execute).
    assert rows == [("http", False), ("http_multipart", False), ("seq", True)]


# ---------------------------------------------------------------------------------------
# Helper results composed in the same statement
# ---------------------------------------------------------------------------------------


def test_helper_result_composed_in_the_same_statement_is_refused(conn: Conn) -> None:
    # The scalar subquery runs before df.seq is called, so the mark is always set first.
    sql = """SELECT df.seq((SELECT 'OK' FROM (SELECT df._mark_helper_result('df.setvar', 'OK'))
                            AS helper), 'SELECT 1')"""
    assert failure(conn, sql) == (
        "22023",
        "df.setvar cannot be used as a workflow step. Call df.setvar before df.start().",
    )


def test_helper_result_in_a_later_statement_is_plain_sql(conn: Conn) -> None:
    with conn.transaction():
        conn.execute("SELECT df._mark_helper_result('df.await_instance', 'completed')")
        got = value(conn, "SELECT df.seq('completed', 'SELECT 1')")
    assert got == dumps(
        node("THEN", left_node=sql_node("completed"), right_node=sql_node("SELECT 1"))
    )


def test_helper_mark_only_matches_its_own_text(conn: Conn) -> None:
    sql = """SELECT df.seq('SELECT 1', (SELECT 'x' FROM (SELECT df._mark_helper_result(
                 'df.clearvars', 'OK')) AS helper))"""
    assert value(conn, sql) == dumps(
        node("THEN", left_node=sql_node("SELECT 1"), right_node=sql_node("x"))
    )
