"""The admin HTTP endpoint: /healthz and /metrics (aiohttp)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from pgdurable_proxy.metrics import Metrics


async def start_admin(
    host: str, port: int, metrics: Metrics, more: Callable[[], str] = str
) -> web.AppRunner:
    """Serve /healthz and /metrics (the relay's counters, then `more()`); returns the runner
    to clean up at shutdown."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render() + more(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
