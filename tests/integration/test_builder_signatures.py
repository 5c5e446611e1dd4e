"""Graph builders' and operators' signatures, STRICTness and privileges (catalog builders.sql,
operators.sql)."""

from __future__ import annotations

import pytest

from tests.support.builders import B, Conn, value

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
