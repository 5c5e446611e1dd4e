"""Graph builders and operators (catalog builders.sql, operators.sql): every example of
spec §4, byte-exact JSON through the functions and through the operators."""

from __future__ import annotations

import pytest

from tests.support.builders import A, B, C, Conn, dumps, node, value

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
