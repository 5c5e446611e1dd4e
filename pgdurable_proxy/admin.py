"""The admin HTTP endpoint: /healthz (alive), /readyz (ready to serve), /metrics and, when
mounted, the dashboard (aiohttp)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], Awaitable[dict[str, str]]]
BeforeScrape = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


async def start_admin(
    host: str,
    port: int,
    registry: CollectorRegistry,
    before_scrape: BeforeScrape = _nothing,
    readiness: Readiness | None = None,
    mount: Callable[[web.Application], None] | None = None,
) -> web.AppRunner:
    """Serve /healthz, /readyz (each of `readiness()`'s checks "ok", else 503 naming what
    is wrong) and /metrics (`registry` in Prometheus text format, after `before_scrape()`
    has read what collectors cannot read synchronously); returns the runner to clean up at
    shutdown."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        checks = await readiness() if readiness is not None else {}
        ready = all(state == "ok" for state in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_page(_: web.Request) -> web.Response:
        await before_scrape()
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    if mount is not None:  # the dashboard's routes (pgdurable_proxy/dashboard)
        mount(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
