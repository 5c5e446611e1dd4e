"""Run HTTP steps with aiohttp (§6.8): privilege check, guarded destinations, redirects
followed by hand (each hop re-checked), time and size limits, the result envelope.

One ClientSession serves every step: created on first use, closed when the engine stops.
It keeps no cookies (steps of different roles share it) and never reads proxy settings
from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict
from yarl import URL

from engine.errors import OwnerRefused, StepFailed
from engine.executors.http_request import (
    PRIVILEGE_FUNCTIONS,
    Header,
    HttpRequest,
    envelope,
    parse_request,
    retry_after_seconds,
    server_error_text,
)
from engine.executors.ssrf import Blocked, Guard, GuardedResolver
from engine.planner.http_config import HttpConfigError
from engine.records import Task
from engine.redaction import redact_url, redact_urls
from engine.settings import HttpSettings
from engine.store import Store

log = logging.getLogger("pgdurable.http")
REDIRECTS = frozenset((301, 302, 303, 307, 308))
# Not sent on to another origin after a redirect.
ORIGIN_BOUND = frozenset(("authorization", "cookie", "proxy-authorization", "host"))
# No automatic Content-Type (the body goes as is) and no Accept-Encoding (bodies arrive as
# the server sends them; the response limit counts the bytes on the wire).
SKIP_AUTO_HEADERS = ("Content-Type", "Accept-Encoding")
CHUNK_BYTES = 64 * 1024
TOO_MANY_REQUESTS = 429  # retried under a failure policy, like a 5xx
PREVIEW_BYTES = 512
# --http-disable: pg_durable's text for its build without the HTTP feature
HTTP_DISABLED = (
    "Blocked: outbound HTTP requests are disabled. Rebuild with the 'http-allow-azure-domains' "
    "Cargo feature to enable them."
)


async def run_http_step(
    client: HttpClient, store: Store, task: Task, allow_superuser: bool = False
) -> str:
    """The step's result envelope; raises StepFailed with the node's error text."""
    await check_privilege(store, task, allow_superuser)
    try:
        request = parse_request(
            task.node_type, task.node_id, task.payload, client.settings.max_request_bytes
        )
    except HttpConfigError as exc:
        raise StepFailed(str(exc)) from None
    log.debug(
        "event=http_step instance=%s node=%s method=%s url=%s",
        *(task.instance_id, task.node_id, request.method, redact_url(request.url)),
    )
    return await client.fetch(request)


async def check_privilege(store: Store, task: Task, allow_superuser: bool) -> None:
    """The owner must hold EXECUTE on the node's builder now, not only when it started,
    and, as before any step, exist and not be a superuser (unless allowed)."""
    signature = PRIVILEGE_FUNCTIONS[task.node_type]
    owner = task.owner
    privilege = await store.http_privilege(owner, signature)
    if privilege is None:
        raise StepFailed(str(OwnerRefused.gone(task.instance_id)), OwnerRefused.sqlstate)
    if privilege.superuser and not allow_superuser:
        refused = OwnerRefused.superuser(task.instance_id, owner.name)
        raise StepFailed(str(refused), refused.sqlstate)
    if not privilege.allowed:
        short = signature.split("(")[0] + "()"
        raise StepFailed(
            f"Blocked: role '{owner.name}' does not have EXECUTE privilege on {short}. "
            f"Grant EXECUTE ON FUNCTION {signature} TO {owner.name} to allow HTTP requests."
        )


@dataclass(slots=True)
class Hop:
    """The request being made: the original one, then each redirect's."""

    method: str
    url: URL
    text: str  # the URL as given (error messages show it redacted: `shown`)
    headers: list[Header]
    body: bytes | None
    redirects: int = 0
    came_from: str | None = None  # the previous hop's URL, redacted
    status: int | None = None  # this hop's answer's status code
    failure: str | None = None  # timeout, blocked, cancelled

    @property
    def outcome(self) -> str:
        """How the request ended (HttpClient's on_outcome): timeout, blocked or cancelled,
        else the status class of the last answer (a body too large included), else error."""
        if self.failure is not None:
            return self.failure
        return "error" if self.status is None else f"{self.status // 100}xx"

    @property
    def shown(self) -> str:
        """The URL as error texts and logs show it: its secrets redacted (pg_durable 0.2.8)."""
        return redact_url(self.text)

    @property
    def origin(self) -> str:
        """scheme://host:port only: logs leave out paths and queries (they may hold tokens)."""
        return f"{self.url.scheme}://{self.url.host}:{self.url.port}"

    def redirect(self, status: int, location: str) -> None:
        target = self.url.join(URL(location))
        if status == 303 or (status in (301, 302) and self.method == "POST"):
            self.method, self.body = "GET", None
            self.headers = [h for h in self.headers if h[0].lower() != "content-type"]
        if _origin(target) != _origin(self.url):
            self.headers = [h for h in self.headers if h[0].lower() not in ORIGIN_BOUND]
        self.came_from, self.url, self.text = self.shown, target, str(target)
        self.redirects += 1
        self.status = None


class HttpClient:
    """Executes HTTP requests for steps; one per engine. `on_outcome` hears how each
    request ended: the status class of its last answer ("2xx", ...), "timeout", "blocked"
    (a destination not allowed) or "error" (no answer)."""

    def __init__(
        self,
        settings: HttpSettings,
        resolver: AbstractResolver | None = None,
        on_outcome: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.guard = Guard(settings.allow)
        self._inner = resolver
        self._resolver: GuardedResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            inner = self._inner or aiohttp.ThreadedResolver()
            self._resolver = GuardedResolver(self.guard, inner)
            connector = aiohttp.TCPConnector(resolver=self._resolver)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(),  # fetch() bounds the whole exchange
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._resolver is not None:
            await self._resolver.close()

    async def fetch(self, request: HttpRequest) -> str:
        hop = Hop(request.method, URL(), request.url, list(request.headers), request.body)
        try:
            result = await self._fetch(request, hop)
        except asyncio.CancelledError:
            hop.failure = "cancelled"  # abandoned: a RACE lost, its instance cancelled
            raise
        finally:
            self.on_outcome(hop.outcome)
        return result

    async def _fetch(self, request: HttpRequest, hop: Hop) -> str:
        limit = min(request.timeout, self.settings.max_timeout)
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                status, headers, body = await self._exchange(hop)
        except StepFailed:
            raise
        except TimeoutError:
            hop.failure = "timeout"
            message = f"HTTP timeout after {_seconds(limit)}s: {hop.shown}"
            raise StepFailed(message, retryable=True) from None
        except Blocked as exc:
            hop.failure = "blocked"
            raise StepFailed(_after_redirect(str(exc), hop)) from None
        except aiohttp.ClientConnectorError as exc:
            message = f"HTTP connection failed: {hop.shown} - {_said(exc)}"
            raise StepFailed(message, retryable=True) from None
        except (aiohttp.ClientError, ValueError) as exc:
            message = f"HTTP request failed: {hop.shown} - {_said(exc)}"
            raise StepFailed(message, retryable=isinstance(exc, aiohttp.ClientError)) from None
        except Exception as exc:  # a step must fail with a message, never poison its task
            log.exception("event=http_unexpected_error url=%s", hop.origin)
            said = redact_urls(repr(exc))
            raise StepFailed(f"HTTP request failed: {hop.shown} - {said}") from None
        duration_ms = int((time.monotonic() - started) * 1000)
        result = envelope(status, body, headers, duration_ms)
        if status == TOO_MANY_REQUESTS:  # retried while attempts are left, else the result
            raise StepFailed(
                server_error_text(hop.method, hop.shown, status, body),
                retryable=True,
                retry_after=retry_after_seconds(_header(headers, "Retry-After")),
                result=result,
            )
        return result

    async def _exchange(self, hop: Hop) -> tuple[int, list[Header], bytes]:
        """Send the request, following redirects; (status, headers, body) of the last."""
        hop.url = self._checked(URL(hop.text), hop.text)
        while True:
            async with self.session().request(
                hop.method,
                hop.url,
                headers=CIMultiDict(hop.headers),
                data=hop.body,
                allow_redirects=False,
                skip_auto_headers=SKIP_AUTO_HEADERS,
            ) as resp:
                hop.status = resp.status
                location = resp.headers.get("Location")
                if resp.status in REDIRECTS and location is not None:
                    if hop.redirects < self.settings.max_redirects:
                        hop.redirect(resp.status, location)
                        log.info("event=http_redirect status=%s to=%s", resp.status, hop.origin)
                        self._checked(hop.url, hop.text)
                        continue
                if resp.status >= 500:
                    preview = await _read_preview(resp)
                    raise StepFailed(
                        server_error_text(hop.method, hop.shown, resp.status, preview),
                        retryable=True,
                        retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                    )
                body = await self._read_body(resp, hop)
                return resp.status, list(resp.headers.items()), body

    def _checked(self, url: URL, text: str) -> URL:
        """Checks that need no DNS: the scheme, and hosts that are IP literals."""
        scheme = url.scheme.lower() if url.scheme else text.split("://")[0].lower()
        if scheme not in ("http", "https"):
            raise Blocked(
                f"Blocked: unsupported URL scheme '{scheme}'. Only http and https are allowed."
            )
        if not self.settings.enabled:
            raise Blocked(HTTP_DISABLED)
        if not url.host or url.port is None:
            raise ValueError("the URL has no host")
        self.guard.check_literal(url.host, url.port)
        return url

    async def _read_body(self, resp: aiohttp.ClientResponse, hop: Hop) -> bytes:
        """The whole body, read in chunks; fails as soon as it passes the limit."""
        limit = self.settings.max_response_bytes
        too_large = StepFailed(
            f"HTTP response from {hop.shown} is larger than the limit of {limit} bytes "
            "(--http-max-response-bytes)"
        )
        if resp.content_length is not None and resp.content_length > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


async def _read_preview(resp: aiohttp.ClientResponse) -> bytes:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(PREVIEW_BYTES):
        data += chunk
        if len(data) >= PREVIEW_BYTES:
            break
    return bytes(data[:PREVIEW_BYTES])


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return url.scheme.lower(), url.host, url.port


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _said(exc: BaseException) -> str:
    """A library's error message, which may quote the URL: its secrets redacted."""
    return redact_urls(str(exc))


def _after_redirect(message: str, hop: Hop) -> str:
    return message if hop.came_from is None else f"{message} (redirected from {hop.came_from})"


def _header(headers: list[Header], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers if key.lower() == wanted), None)
