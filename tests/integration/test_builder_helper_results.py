"""A helper's result (df.setvar, df.await_instance, ...) given to a graph builder: refused
when composed in the same statement, plain SQL otherwise."""

from __future__ import annotations

from tests.support.builders import Conn, dumps, failure, node, sql_node, value


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
