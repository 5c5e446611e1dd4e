"""HTTP steps without I/O (§6.8): the request a node's substituted configuration describes
(headers, body, multipart encoding) and the result envelope. The substitution itself is the
planner's (engine/planner/http_config.py)."""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime
import email.utils
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from engine.planner.http_config import HttpConfigError, load_config
from engine.planner.kinds import NodeType

PRIVILEGE_FUNCTIONS: dict[str, str] = {
    NodeType.HTTP: "df.http(text,text,text,jsonb,integer)",
    NodeType.HTTP_MULTIPART: "df.http_multipart(text,text,jsonb,jsonb,integer)",
}
_METHOD_ERRORS: dict[str, str] = {
    NodeType.HTTP: ("Invalid HTTP method: {}. Must be GET, POST, PUT, DELETE, or PATCH"),
    NodeType.HTTP_MULTIPART: "Invalid HTTP method for multipart: {}. Must be POST, PUT, or PATCH",
}
METHODS: dict[str, tuple[str, ...]] = {
    NodeType.HTTP: ("GET", "POST", "PUT", "DELETE", "PATCH"),
    NodeType.HTTP_MULTIPART: ("POST", "PUT", "PATCH"),
}
# The client frames the message itself; caller values for these would corrupt it.
FRAMING_HEADERS = frozenset(
    (
        *("content-length", "transfer-encoding", "connection", "keep-alive"),
        *("te", "trailer", "upgrade", "proxy-connection"),
    )
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TEXT_TYPES = frozenset(
    f"application/{kind}"
    for kind in (
        "json",
        "xml",
        "javascript",
        "ecmascript",
        "x-www-form-urlencoded",
        "graphql",
        "yaml",
        "x-yaml",
    )
)

Header = tuple[str, str]


def user_agent() -> str:
    try:
        return f"pgdurable/{metadata.version('pgdurable')}"
    except metadata.PackageNotFoundError:
        return "pgdurable"


# -- execution: the request a payload describes ----------------------------------------------
@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP step's request, before redirects."""

    method: str
    url: str
    headers: tuple[Header, ...]
    body: bytes | None
    timeout: float


def parse_request(
    node_type: str, node_id: str, payload: str | None, max_request_bytes: int
) -> HttpRequest:
    config = load_config(node_type, payload)
    method = str(config.get("method") or "POST").upper()
    if method not in METHODS[node_type]:
        raise HttpConfigError(_METHOD_ERRORS[node_type].format(method))
    url = config.get("url")
    if not isinstance(url, str):
        raise HttpConfigError(f"{node_type} node {node_id}: url must be a string")
    timeout = config.get("timeout_seconds", 30)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise HttpConfigError("Timeout must be positive")
    headers = request_headers(config.get("headers"))
    body: bytes | None
    if node_type == NodeType.HTTP_MULTIPART:
        body, content_type = encode_multipart(node_id, config.get("parts"))
        headers = [h for h in headers if h[0].lower() != "content-type"]
        headers.append(("Content-Type", content_type))
    else:
        body = _body(config.get("body"))
    if body is not None and len(body) > max_request_bytes:
        raise HttpConfigError(
            f"HTTP request body is {len(body)} bytes, more than the limit of "
            f"{max_request_bytes} bytes (--http-max-request-bytes)"
        )
    return HttpRequest(method, url, tuple(headers), body, float(timeout))


def _body(value: Any) -> bytes | None:
    if value is None:
        return None
    return (value if isinstance(value, str) else compact(value)).encode()


def request_headers(value: Any) -> list[Header]:
    """String-valued entries only (as pg_durable), minus framing headers, plus a default
    User-Agent; names must be tokens and values may not break lines."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise HttpConfigError("HTTP headers must be a JSON object of name: string value")
    headers: list[Header] = []
    for name, text in value.items():
        if not isinstance(text, str) or name.lower() in FRAMING_HEADERS:
            continue
        if not _TOKEN.fullmatch(name) or any(c in text for c in "\r\n\0"):
            raise HttpConfigError(
                f"HTTP header '{name}' is not valid: names are tokens and values cannot "
                "contain line breaks"
            )
        headers.append((name, text))
    if not any(name.lower() == "user-agent" for name, _ in headers):
        headers.append(("User-Agent", user_agent()))
    return headers


def encode_multipart(node_id: str, parts: Any, boundary: str | None = None) -> tuple[bytes, str]:
    """multipart/form-data bytes and the Content-Type naming their boundary."""
    if not isinstance(parts, list) or not parts:
        raise HttpConfigError("parts must contain at least one part")
    boundary = boundary or f"pgdurable-{uuid.uuid4().hex}"
    out = bytearray()
    for number, part in enumerate(parts, 1):
        out += f"--{boundary}\r\n".encode() + _part(node_id, number, part)
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _part(node_id: str, number: int, part: Any) -> bytes:
    if not isinstance(part, dict) or not isinstance(part.get("name"), str):
        raise HttpConfigError(f"HTTP_MULTIPART node {node_id}: part {number} has no name")
    name, data = part["name"], part.get("data_b64")
    if not isinstance(data, str):
        raise HttpConfigError(f"HTTP_MULTIPART node {node_id}: part '{name}' has no data_b64")
    try:
        payload = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HttpConfigError(
            f"HTTP_MULTIPART node {node_id}: data_b64 for part '{name}' is not valid base64: {exc}"
        ) from None
    head = f'Content-Disposition: form-data; name="{_quote(name)}"'
    if isinstance(part.get("filename"), str):
        head += f'; filename="{_quote(part["filename"])}"'
    content_type = part.get("content_type")
    if isinstance(content_type, str):
        if any(c in content_type for c in "\r\n\0"):
            raise HttpConfigError(f"HTTP_MULTIPART node {node_id}: bad content_type for '{name}'")
        head += f"\r\nContent-Type: {content_type}"
    return head.encode() + b"\r\n\r\n" + payload + b"\r\n"


def _quote(text: str) -> str:
    """A form-data parameter value, escaped as browsers do (RFC 7578 §4.2)."""
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


# -- the result envelope ----------------------------------------------------------------------
def is_text_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return (
        media.startswith("text/")
        or media.endswith(("+json", "+xml", "+yaml"))
        or media in _TEXT_TYPES
    )


def _charset(content_type: str | None) -> str:
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip('"')).name
            except LookupError:
                break
    return "utf-8"


def body_field(body: bytes, content_type: str | None) -> tuple[str, str]:
    """(body, encoding): text for textual types or valid UTF-8, else base64. Text holding
    NUL is sent as base64 too: PostgreSQL cannot store it in the result."""
    text: str | None
    if is_text_type(content_type):
        text = body.decode(_charset(content_type), "replace")
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is None or "\0" in text:
        return base64.b64encode(body).decode("ascii"), "base64"
    return text, "text"


def envelope(status: int, body: bytes, headers: Iterable[Header], duration_ms: int) -> str:
    """`{"status","body","encoding","headers","ok","duration_ms"}` as compact JSON."""
    names: dict[str, str] = {}
    for name, value in headers:
        key, clean = name.lower(), _clean(value)
        names[key] = f"{names[key]}, {clean}" if key in names else clean
    text, encoding = body_field(body, names.get("content-type"))
    document: dict[str, Any] = {
        "status": status,
        "body": text,
        "encoding": encoding,
        "headers": names,
        "ok": 200 <= status < 300,
        "duration_ms": duration_ms,
    }
    return compact(document)


def _clean(text: str) -> str:
    """A header value as valid Unicode (the parser keeps undecodable bytes as surrogates)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\0", "")


def server_error_text(method: str, url: str, status: int, preview: bytes) -> str:
    """The node's error for a 5xx answer: the first ≤ 512 bytes of the body."""
    text = preview[:512].decode("utf-8", "replace").replace("\0", "\ufffd")
    return f"HTTP {method} {url} returned {status}: {text}"


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP Retry-After header's wait in seconds (delay-seconds or an HTTP-date); None
    when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())
