"""The HTTP client against a local server: envelope, redirects, guard, limits, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from engine.errors import StepFailed
from engine.executors.http import HTTP_DISABLED, HttpClient
from engine.executors.http_request import HttpRequest, user_agent
from engine.executors.ssrf import parse_allow_list
from engine.redaction import redact_url
from engine.settings import HttpSettings
from pgdurable_proxy.cluster import free_port
from tests.support.http_server import PNG, ServerThread


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    thread = ServerThread().start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def other() -> Iterator[ServerThread]:
    """A second server on the same address, another port: not allowed."""
    thread = ServerThread().start()
    yield thread
    thread.stop()


def _settings(server: ServerThread, **limits: Any) -> HttpSettings:
    allow = parse_allow_list(f"{server.host}:{server.port}")
    return HttpSettings(allow=allow, **limits)


@pytest.fixture
async def client(server: ServerThread) -> AsyncIterator[HttpClient]:
    http = HttpClient(_settings(server, max_response_bytes=1024 * 1024, max_redirects=3))
    yield http
    await http.close()


def _request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: tuple[tuple[str, str], ...] = (("User-Agent", user_agent()),),
    timeout: float = 10,
) -> HttpRequest:
    return HttpRequest(method, url, headers, body, timeout)


async def _fails(client: HttpClient, request: HttpRequest) -> str:
    with pytest.raises(StepFailed) as caught:
        await client.fetch(request)
    return str(caught.value)


async def test_text_envelope_and_request_shape(client: HttpClient, server: ServerThread) -> None:
    raw = await client.fetch(_request(server.url("/echo?a=1"), "POST", b"payload"))
    result = json.loads(raw)
    assert list(result) == ["status", "body", "encoding", "headers", "ok", "duration_ms"]
    assert result["status"] == 200 and result["ok"] is True and result["encoding"] == "text"
    assert result["headers"]["content-type"].startswith("application/json")
    sent = json.loads(result["body"])
    assert sent["method"] == "POST" and sent["body"] == "payload" and sent["query"] == {"a": "1"}
    assert sent["headers"]["User-Agent"] == user_agent()
    assert "Content-Type" not in sent["headers"]  # the body goes raw, no type is made up
    assert "Accept-Encoding" not in sent["headers"]


async def test_binary_is_base64(client: HttpClient, server: ServerThread) -> None:
    result = json.loads(await client.fetch(_request(server.url("/binary"))))
    assert result["encoding"] == "base64"
    import base64

    assert base64.b64decode(result["body"]) == PNG


async def test_4xx_is_a_result_and_5xx_a_failure(client: HttpClient, server: ServerThread) -> None:
    result = json.loads(await client.fetch(_request(server.url("/status/404"))))
    assert result["status"] == 404 and result["ok"] is False
    message = await _fails(client, _request(server.url("/status/503"), "PUT"))
    prefix = f"HTTP PUT {server.url('/status/503')} returned 503: status 503 "
    assert message.startswith(prefix) and len(message.encode()) == len(prefix) - 11 + 512


async def test_redirects_are_followed_and_rechecked(
    client: HttpClient, server: ServerThread, other: ServerThread
) -> None:
    result = json.loads(await client.fetch(_request(server.url("/redirect/3"))))
    assert result["status"] == 200 and json.loads(result["body"])["path"] == "/echo"
    capped = json.loads(await client.fetch(_request(server.url("/redirect/5"))))
    assert capped["status"] == 302 and capped["headers"]["location"] == "/redirect/1"
    hop = server.url(f"/redirect/1?to={other.url('/echo')}")
    message = await _fails(client, _request(hop))
    assert message == (
        f"Blocked: '{other.host}' is a non-public address. Allow it with --http-allow. "
        f"(redirected from {server.url('/redirect/1?to=REDACTED')})"  # query values redacted
    )
    metadata = server.url("/redirect/1?to=http://169.254.169.254/latest/meta-data/")
    assert (await _fails(client, _request(metadata))).startswith(
        "Blocked: '169.254.169.254' is a non-public address."
    )
    ftp = await _fails(client, _request(server.url("/redirect/1?to=ftp://example.com/x")))
    assert ftp.startswith("Blocked: unsupported URL scheme 'ftp'.")


async def test_303_turns_into_get_and_307_keeps_the_body(
    client: HttpClient, server: ServerThread
) -> None:
    url = server.url("/redirect/1?code=303&to=/echo")
    sent = json.loads(json.loads(await client.fetch(_request(url, "POST", b"x")))["body"])
    assert sent["method"] == "GET" and sent["body"] == ""
    url = server.url("/redirect/1?code=307&to=/echo")
    sent = json.loads(json.loads(await client.fetch(_request(url, "PUT", b"x")))["body"])
    assert sent["method"] == "PUT" and sent["body"] == "x"


async def test_credentials_stay_with_their_origin(server: ServerThread) -> None:
    second = ServerThread().start()
    allow = parse_allow_list(f"{server.host}:{server.port},{second.host}:{second.port}")
    http = HttpClient(HttpSettings(allow=allow))
    try:
        headers = (("Authorization", "Bearer s"), ("X-Keep", "k"))
        same = json.loads(await http.fetch(_request(server.url("/redirect/1"), headers=headers)))
        assert json.loads(same["body"])["headers"]["Authorization"] == "Bearer s"
        hop = server.url(f"/redirect/1?to={second.url('/echo')}")
        moved = json.loads(await http.fetch(_request(hop, headers=headers)))
        sent = json.loads(moved["body"])["headers"]
        assert "Authorization" not in sent and sent["X-Keep"] == "k"
    finally:
        await http.close()
        second.stop()


async def test_guard_refuses_unlisted_local_destinations(
    client: HttpClient, server: ServerThread
) -> None:
    assert await _fails(client, _request(f"http://localhost:{server.port}/echo")) == (
        "Blocked: 'localhost' resolves to a non-public address (127.0.0.1). "
        "Allow it with --http-allow."
    )
    literal = await _fails(client, _request(f"http://127.0.0.1:{server.port}/echo"))
    assert literal.startswith("Blocked: '127.0.0.1' is a non-public address.")
    mapped = await _fails(client, _request(f"http://[::ffff:127.0.0.2]:{server.port + 1}/"))
    assert mapped.startswith("Blocked: '::ffff:7f00:2' is a non-public address.")  # yarl's form
    scheme = await _fails(client, _request("file:///etc/passwd"))
    assert scheme == "Blocked: unsupported URL scheme 'file'. Only http and https are allowed."


async def test_response_limit(client: HttpClient, server: ServerThread) -> None:
    for query in ("n=5000000", "n=5000000&declared=1"):
        url = server.url(f"/huge?{query}")
        assert await _fails(client, _request(url)) == (
            f"HTTP response from {redact_url(url)} is larger than the limit of 1048576 bytes "
            "(--http-max-response-bytes)"
        )
    exact = json.loads(await client.fetch(_request(server.url("/huge?n=1048576"))))
    assert len(exact["body"]) == 1048576


async def test_timeout_is_capped(server: ServerThread) -> None:
    http = HttpClient(_settings(server, max_timeout=0.5))
    try:
        url = server.url("/slow?s=5")
        shown = server.url("/slow?s=REDACTED")
        assert await _fails(http, _request(url, timeout=30)) == f"HTTP timeout after 0.5s: {shown}"
    finally:
        await http.close()


async def test_connection_errors(client: HttpClient, server: ServerThread) -> None:
    url = f"http://{server.host}:{free_port()}/"
    allowed = HttpClient(HttpSettings(allow=parse_allow_list(server.host)))
    try:
        message = await _fails(allowed, _request(url))
    finally:
        await allowed.close()
    assert message.startswith(f"HTTP connection failed: {url} - ")
    invalid = await _fails(client, _request("http:///nohost"))
    assert invalid.startswith("HTTP request failed: http:///nohost - ")


async def test_http_disabled_refuses_every_request_after_the_scheme_check(
    server: ServerThread,
) -> None:
    http = HttpClient(_settings(server, enabled=False))
    try:
        assert await _fails(http, _request(server.url("/echo"))) == HTTP_DISABLED
        ftp = await _fails(http, _request("ftp://example.com/x"))
        assert ftp.startswith("Blocked: unsupported URL scheme 'ftp'.")
    finally:
        await http.close()


async def test_errors_show_the_url_with_its_secrets_redacted(server: ServerThread) -> None:
    port = free_port()
    allowed = HttpClient(HttpSettings(allow=parse_allow_list(server.host)))
    try:
        url = f"http://user:secret@{server.host}:{port}/p?token=abc#frag"
        message = await _fails(allowed, _request(url))
    finally:
        await allowed.close()
    shown = f"http://REDACTED@{server.host}:{port}/p?token=REDACTED#REDACTED"
    assert message.startswith(f"HTTP connection failed: {shown} - ")
    assert "secret" not in message and "abc" not in message and "frag" not in message


async def test_each_request_reports_its_outcome(server: ServerThread, other: ServerThread) -> None:
    """/metrics' pgdurable_http_step_requests_total: the last answer's status class, else
    why there was none."""
    heard: list[str] = []
    settings = _settings(server, max_timeout=0.2, max_redirects=1)
    http = HttpClient(settings, on_outcome=heard.append)
    refused = f"http://{server.host}:{free_port()}/"
    try:
        await http.fetch(_request(server.url("/redirect/1")))  # 302, then 200
        await http.fetch(_request(server.url("/status/404")))
        await http.fetch(_request(server.url("/redirect/3")))  # a redirect not followed
        await _fails(http, _request(server.url("/status/503")))
        await _fails(http, _request(server.url(f"/redirect/1?to={other.url('/echo')}")))
        await _fails(http, _request(server.url("/slow?s=5")))
    finally:
        await http.close()
    assert heard == ["2xx", "4xx", "3xx", "5xx", "blocked", "timeout"]
    allowed = HttpClient(HttpSettings(allow=parse_allow_list(server.host)), None, heard.append)
    try:
        await _fails(allowed, _request(refused))
    finally:
        await allowed.close()
    assert heard[-1] == "error"
