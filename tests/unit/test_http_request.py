"""HTTP steps without I/O: substitution into the config, requests, multipart, the envelope."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from engine.executors.http_request import (
    body_field,
    encode_multipart,
    envelope,
    parse_request,
    server_error_text,
    user_agent,
)
from engine.planner.http_config import HttpConfigError, substituted_config
from engine.planner.substitute import SubstitutionError, substitute_results

ROWS = json.dumps({"rows": [{"id": 7, "name": "O'Neil", "meta": {"a": 1}}], "row_count": 1})
EMPTY = json.dumps({"rows": [], "row_count": 0})
HTTP_RESULT = json.dumps({"status": 200, "body": "hi", "ok": True})
RESULTS = {"r": ROWS, "e": EMPTY, "h": HTTP_RESULT}


def _raw(text: str) -> str:
    return substitute_results(text, RESULTS, raw=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/items/$r", "/items/7"),
        ("$r.name", "O'Neil"),  # unquoted in raw context
        ("$r.meta", '{"a":1}'),
        ("$r.*", '[{"id":7,"name":"O\'Neil","meta":{"a":1}}]'),
        ("$e?", "NULL"),
        ("$e.id?", "NULL"),
        ("$h", HTTP_RESULT.replace(" ", "")),  # a result without rows is used whole
        ("$h.body", "hi"),
        ("$h.ok", "true"),
        ("$h.status-x", "200-x"),
        ("cost: $5", "cost: $5"),
    ],
)
def test_raw_substitution(text: str, expected: str) -> None:
    assert _raw(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$e", "$e has no rows — query returned zero results"),
        ("$r.missing", "$r.missing: result has no field 'missing' (available: id, name, meta)"),
        ("$h.nope", "$h.nope: result has no field 'nope'"),
    ],
)
def test_raw_substitution_failures(text: str, message: str) -> None:
    with pytest.raises(SubstitutionError) as caught:
        _raw(text)
    assert str(caught.value).startswith(message)


def test_sql_substitution_is_unchanged() -> None:
    assert substitute_results("SELECT $r.name", RESULTS) == "SELECT 'O''Neil'"


def _config(**fields: Any) -> str:
    base = {"url": "http://h/p", "method": "POST", "body": None, "headers": None}
    return json.dumps({**base, **fields, "timeout_seconds": 30})


def test_config_substitutes_url_body_and_string_header_values_only() -> None:
    config = _config(
        url="http://h/{v}/$r", body='{"n": "$r.name"}', headers={"X-A": "$r", "X-N": 5}
    )
    got = json.loads(substituted_config("HTTP", "n1", config, lambda t: t.replace("$r", "7")))
    assert got["url"] == "http://h/{v}/7"
    assert got["body"] == '{"n": "7.name"}'
    assert got["headers"] == {"X-A": "7", "X-N": 5}


def test_multipart_data_b64_whole_value_reference_only() -> None:
    parts = [{"name": "$r", "filename": "f-$r.txt", "data_b64": " $r ", "content_type": "$r"}]
    config = _config(parts=parts)
    got = json.loads(substituted_config("HTTP_MULTIPART", "n1", config, lambda t: t + "!"))
    assert got["parts"] == [
        {"name": "$r!", "filename": "f-$r.txt!", "data_b64": "$r!", "content_type": "$r!"}
    ]
    bad = _config(parts=[{"name": "a", "data_b64": "QUJD$r"}])
    with pytest.raises(HttpConfigError) as caught:
        substituted_config("HTTP_MULTIPART", "n1", bad, lambda t: t)
    assert str(caught.value).startswith(
        "HTTP_MULTIPART node n1: data_b64 for part 'a' mixes a variable reference with other "
        "text. Only a whole-value reference is supported (e.g. data_b64 => '$result' or "
        "'{myvar}'), because splicing into base64 would corrupt the payload."
    )


def test_request_headers_body_and_defaults() -> None:
    config = _config(body="raw body", headers={"X-Token": "t", "Content-Length": "9", "N": 1})
    request = parse_request("HTTP", "n1", config, 1000)
    assert request.body == b"raw body" and request.method == "POST" and request.timeout == 30
    assert request.headers == (("X-Token", "t"), ("User-Agent", user_agent()))
    custom = parse_request("HTTP", "n1", _config(headers={"user-agent": "me"}), 1000)
    assert custom.headers == (("user-agent", "me"),)
    assert user_agent().startswith("pgdurable/")


@pytest.mark.parametrize(
    ("node_type", "config", "message"),
    [
        ("HTTP", _config(method="TRACE"), "Invalid HTTP method: TRACE. Must be GET, POST, PUT"),
        ("HTTP_MULTIPART", _config(method="GET", parts=[]), "Invalid HTTP method for multipart"),
        ("HTTP", _config(headers=["a"]), "HTTP headers must be a JSON object"),
        ("HTTP", _config(headers={"Bad Name": "x"}), "HTTP header 'Bad Name' is not valid"),
        ("HTTP", _config(headers={"X": "a\r\nB: c"}), "HTTP header 'X' is not valid"),
        ("HTTP", _config(body="x" * 11), "HTTP request body is 11 bytes, more than the limit"),
        ("HTTP", "[1]", "HTTP node has an invalid configuration"),
        (
            "HTTP_MULTIPART",
            _config(parts=[{"name": "a", "data_b64": "%%"}]),
            "data_b64 for part 'a' is not valid base64",
        ),
        (
            "HTTP_MULTIPART",
            _config(parts=[{"data_b64": ""}]),
            "HTTP_MULTIPART node n1: part 1 has no name",
        ),
    ],
)
def test_bad_requests(node_type: str, config: str, message: str) -> None:
    with pytest.raises(HttpConfigError) as caught:
        parse_request(node_type, "n1", config, 10)
    assert message in str(caught.value)


def test_multipart_encoding() -> None:
    parts = [
        {"name": "meta", "data_b64": base64.b64encode(b'{"a":1}').decode()},
        {
            "name": 'fi"le',
            "filename": "a.bin",
            "content_type": "application/octet-stream",
            "data_b64": "AAEC\n/w==",  # whitespace allowed
        },
    ]
    body, content_type = encode_multipart("n1", parts, boundary="B")
    assert content_type == "multipart/form-data; boundary=B"
    assert body == (
        b'--B\r\nContent-Disposition: form-data; name="meta"\r\n\r\n{"a":1}\r\n'
        b'--B\r\nContent-Disposition: form-data; name="fi%22le"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02\xff\r\n--B--\r\n"
    )


def test_multipart_ignores_callers_content_type() -> None:
    config = _config(parts=[{"name": "a", "data_b64": ""}], headers={"Content-Type": "x/y"})
    request = parse_request("HTTP_MULTIPART", "n1", config, 10_000)
    types = [v for k, v in request.headers if k.lower() == "content-type"]
    assert len(types) == 1 and types[0].startswith("multipart/form-data; boundary=")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"hello", "text/plain", ("hello", "text")),
        (b'{"a":1}', "application/json; charset=utf-8", ('{"a":1}', "text")),
        (b"<a/>", "application/atom+xml", ("<a/>", "text")),
        ("é".encode("latin-1"), "text/plain; charset=latin-1", ("é", "text")),
        (b"plain utf-8 \xc3\xa9", "application/octet-stream", ("plain utf-8 é", "text")),
        (b"\x89PNG\x00\x01", "image/png", ("iVBORwAB", "base64")),
        (b"a\x00b", None, ("YQBi", "base64")),
        (b"a\x00b", "text/plain", ("YQBi", "base64")),  # PostgreSQL cannot store NUL
        (b"", None, ("", "text")),
    ],
)
def test_body_text_or_base64(body: bytes, content_type: str | None, expected: Any) -> None:
    assert body_field(body, content_type) == expected


def test_envelope_key_order_and_lower_case_headers() -> None:
    raw = envelope(
        404,
        b"nope",
        [("Content-Type", "text/plain"), ("X-Multi", "a"), ("x-multi", "b")],
        12,
    )
    assert raw == (
        '{"status":404,"body":"nope","encoding":"text","headers":'
        '{"content-type":"text/plain","x-multi":"a, b"},"ok":false,"duration_ms":12}'
    )
    assert json.loads(envelope(204, b"", [], 1))["ok"] is True


def test_server_error_preview() -> None:
    text = server_error_text("GET", "http://h/x", 503, b"x" * 600)
    assert text == "HTTP GET http://h/x returned 503: " + "x" * 512
