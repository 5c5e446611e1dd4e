"""The listening relay: accepts clients, owns sessions, shuts down gracefully."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from engine.new_transaction import NOTICE_MARKER as NEW_TRANSACTION_NOTICE
from pgdurable_proxy.dsn import UpstreamDSN
from pgdurable_proxy.intercept import Interceptor
from pgdurable_proxy.metrics import Metrics
from pgdurable_proxy.relay import ClientSession

log = logging.getLogger("pgdurable.server")


class ProxyServer:
    """Accepts PostgreSQL clients and relays each to its own upstream connection."""

    def __init__(
        self,
        upstream: UpstreamDSN,
        interceptor: Interceptor,
        metrics: Metrics,
        tls_context: ssl.SSLContext | None = None,
        wake: Callable[[], None] = lambda: None,
        start_new: Callable[[str, str], None] = lambda role, detail: None,
    ) -> None:
        self.upstream = upstream
        self.wake = wake
        self.start_new = start_new
        self.tls_context = tls_context
        self.interceptor = interceptor
        self.metrics = metrics
        self.sessions: set[ClientSession] = set()
        self._server: asyncio.Server | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; return the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientSession(self), host, port, reuse_address=True, backlog=1024
        )
        bound = self._server.sockets[0].getsockname()[1]
        log.info("event=listening host=%s port=%s", host, bound)
        return int(bound)

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop accepting, let sessions finish for up to `grace_seconds`, then close the rest."""
        if self._server is not None:
            self._server.close()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        except TimeoutError:
            log.warning("event=shutdown_timeout sessions=%d", len(self.sessions))
            for session in list(self.sessions):
                session.close()
        if self._server is not None:
            await self._server.wait_closed()

    # -- SessionHost ---------------------------------------------------------------------
    def register(self, session: ClientSession) -> None:
        self.sessions.add(session)
        self._idle.clear()
        self.metrics.sessions_total += 1
        self.metrics.sessions_active = len(self.sessions)

    def unregister(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        self.metrics.sessions_active = len(self.sessions)
        if not self.sessions:
            self._idle.set()

    def inspect(self, session: ClientSession, msg_type: int, message: bytes) -> bytes | None:
        database = session.params.get("database") or session.params.get("user")
        if database != self.upstream.dbname:
            return None  # the df catalog lives in one database; others pass through untouched
        link = session.upstream
        parameters = link.tracker.parameters if link is not None else {}
        decision = self.interceptor.inspect(parameters, msg_type, message)
        if decision.starts_workflow:
            session.wake_on_idle = True
            if link is not None:
                link.tap_notices(NEW_TRANSACTION_NOTICE)
        if decision.positions_errors and link is not None and link.tracker.at_boundary:
            link.position_errors(decision.position_hints)
        return decision.replacement


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS for client connections (--tls-cert/--tls-key)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
