"""Graph operators (catalog operators.sql): untyped literals resolve to them, PostgreSQL's own
precedence, built-ins intact."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.builders import Conn, dumps, failure, node, sql_node, value

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
