"""Graph builders' build-time argument errors (catalog builders.sql), and the edge values they
accept."""

from __future__ import annotations

import json

import pytest

from tests.support.builders import Conn, dumps, failure, sql_node, value

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
