"""A local HTTP server for HTTP-step tests: one aiohttp app with a route per behaviour."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp import BodyPartReader, web

HOST = "127.0.0.2"  # loopback, but not 127.0.0.1: guard tests may use that one
FLAKY_CALLS = web.AppKey("flaky_calls", dict[str, list[float]])
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"


async def echo(request: web.Request) -> web.Response:
    """The request as JSON: method, path, query, headers, body."""
    body = await request.read()
    document = {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "headers": dict(request.headers),
        "body": body.decode("utf-8", "replace"),
    }
    return web.json_response(document)


async def multipart(request: web.Request) -> web.Response:
    parts = []
    reader = await request.multipart()
    async for part in reader:
        assert isinstance(part, BodyPartReader)
        data = await part.read()
        parts.append(
            {
                "name": part.name,
                "filename": part.filename,
                "content_type": part.headers.get("Content-Type"),
                "data": data.hex(),
            }
        )
    return web.json_response(parts)


async def binary(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="image/png")


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"status {code} " + "x" * 600)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "30")))
    return web.Response(text="late")


async def huge(request: web.Request) -> web.StreamResponse:
    """`n` bytes; chunked (no Content-Length) unless ?declared=1."""
    size = int(request.query.get("n", str(64 * 1024 * 1024)))
    response = web.StreamResponse()
    if request.query.get("declared"):
        response.content_length = size
    await response.prepare(request)
    chunk = b"y" * 65536
    sent = 0
    try:
        while sent < size:
            await response.write(chunk[: size - sent])
            sent += len(chunk)
    except (ConnectionResetError, RuntimeError):
        pass
    return response


async def redirect(request: web.Request) -> web.Response:
    """`/redirect/<n>`: n hops of 302 on this server, then /echo; `?to=<url>`: one hop there."""
    code = int(request.query.get("code", "302"))
    target = request.query.get("to")
    if target is None:
        left = int(request.match_info["n"])
        target = f"/redirect/{left - 1}" if left > 1 else "/echo"
    return web.Response(status=code, headers={"Location": target})


async def json_document(request: web.Request) -> web.Response:
    return web.Response(
        text=json.dumps({"greeting": "hello", "n": 42}), content_type="application/json"
    )


async def flaky(request: web.Request) -> web.Response:
    """`/flaky/<key>?fail=<n>&after=<s>`: the first n calls for a key answer 503 with
    `Retry-After: s`, the next ones 200 with the times (epoch seconds) of every call."""
    calls = request.app[FLAKY_CALLS]
    times = calls.setdefault(request.match_info["key"], [])
    times.append(time.time())
    if len(times) <= int(request.query.get("fail", "1")):
        headers = {"Retry-After": request.query.get("after", "1")}
        return web.Response(status=503, text="busy", headers=headers)
    return web.json_response({"calls": times})


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/multipart", multipart)
    app.router.add_get("/binary", binary)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/huge", huge)
    app.router.add_route("*", "/redirect/{n}", redirect)
    app.router.add_get("/json", json_document)
    app.router.add_get("/flaky/{key}", flaky)
    app[FLAKY_CALLS] = {}
    return app


class ServerThread:
    """The app on HOST, on a random port, in a thread of its own (for sync tests)."""

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test HTTP server did not start")
        return self

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(make_app(), shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
