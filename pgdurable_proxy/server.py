"""The listening relay: accepts clients, owns sessions, shuts down gracefully."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from dsl import EXTENSION_MARKER, EXTENSION_TAG
from pgdurable_proxy.dsn import UpstreamDSN
from pgdurable_proxy.intercept import Interceptor
from pgdurable_proxy.metrics import Metrics
from pgdurable_proxy.relay import ClientSession

log = logging.getLogger("pgdurable.server")

DEFAULT_AUTHENTICATION_TIMEOUT = 60.0  # PostgreSQL's authentication_timeout
# Each client holds two descriptors (its socket and its own PostgreSQL connection), and
# each holds a PostgreSQL backend: ten times PostgreSQL's default max_connections never
# refuses a client PostgreSQL would take, and keeps pgdurable within ~2,000 descriptors.
DEFAULT_MAX_CLIENT_CONNECTIONS = 1000
# Tells the df catalog's functions on a session of its database that pgdurable reads the
# session's notices: a startup parameter, so it is the session's default.
RELAY_PARAMETER = b"pg_durable.relay\0on\0"
# The startup parameter naming the relaying engine to the catalog (the digest of its key):
# df.start hands that engine a new instance's first document (df._announce_first).
RELAY_ENGINE_PARAMETER = "pg_durable.relay_engine"

# (login role, notice message, notice detail): a request a backend raised as a NOTICE
NoticeHandler = Callable[[str, str, str], None]


class ProxyServer:
    """Accepts PostgreSQL clients and relays each to its own upstream connection."""

    def __init__(
        self,
        upstream: UpstreamDSN,
        interceptor: Interceptor,
        metrics: Metrics,
        tls_context: ssl.SSLContext | None = None,
        wake: Callable[[], None] = lambda: None,
        relayed_notice: NoticeHandler = lambda role, message, detail: None,
        notice_markers: frozenset[str] = frozenset(),
        *,
        authentication_timeout: float = DEFAULT_AUTHENTICATION_TIMEOUT,
        max_client_connections: int = DEFAULT_MAX_CLIENT_CONNECTIONS,
        startup_parameters: bytes = b"",
        wake_notice: str = "",
        first_notice: str = "",
        relay_engine: str = "",
    ) -> None:
        self.upstream = upstream
        self._startup_parameters = startup_parameters
        # the notice by which a relayed session asks for `wake` once its transaction ends
        # (one of notice_markers; the others go to relayed_notice)
        self.wake_notice = wake_notice
        # the notice carrying a new instance's first document, handed to relayed_notice
        # only once the session's transaction has ended
        self.first_notice = first_notice
        self._relay_parameters = RELAY_PARAMETER
        if relay_engine:
            self._relay_parameters += f"{RELAY_ENGINE_PARAMETER}\0{relay_engine}\0".encode()
        self.authentication_timeout = authentication_timeout
        self.max_client_connections = max_client_connections
        self._admitted: set[ClientSession] = set()
        self.wake = wake
        self.relayed_notice = relayed_notice
        self.notice_markers = notice_markers
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
    def register(self, session: ClientSession) -> bool:
        """Track a new connection; False when it is over --max-client-connections.

        A refused client still gets its SSL/GSS answers and, after its StartupMessage,
        PostgreSQL's FATAL 53300, as PostgreSQL does; past twice the limit it gets that
        error at once, so refused connections too are bounded.
        """
        self.sessions.add(session)
        self._idle.clear()
        self.metrics.sessions_total += 1
        self.metrics.sessions_active = len(self.sessions)
        if len(self._admitted) < self.max_client_connections:
            self._admitted.add(session)
            return True
        self.metrics.clients_refused_total += 1
        log.info("event=too_many_clients max_client_connections=%d", self.max_client_connections)
        if len(self.sessions) > 2 * self.max_client_connections:
            session.refuse()
        return False

    def unregister(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        self._admitted.discard(session)
        self.metrics.sessions_active = len(self.sessions)
        if not self.sessions:
            self._idle.set()

    def startup_parameters(self, session: ClientSession) -> bytes:
        """The parameters (name\\0value\\0 pairs) added to the session's StartupMessage. On
        the catalog's database pgdurable's own notices are also taken out of the session's
        stream and handed to the engine (with the login role), and the session is told so
        (RELAY_PARAMETER). Its wake notice makes the session wake the engine once its
        transaction has ended."""
        link = session.upstream
        if not self._serves_catalog(session.params) or link is None or not self.notice_markers:
            return self._startup_parameters
        login_role = session.params.get("user", "")
        handler, wake_notice, first_notice = (
            self.relayed_notice,
            self.wake_notice,
            self.first_notice,
        )

        def on_notice(message: str, detail: str) -> None:
            if message == wake_notice:
                link.wake_when_idle()
            elif message == first_notice:
                link.act_when_idle(lambda: handler(login_role, message, detail))
            else:
                handler(login_role, message, detail)

        link.tracker.tap_notices(self.notice_markers, on_notice)
        return self._startup_parameters + self._relay_parameters

    def _serves_catalog(self, params: dict[str, str]) -> bool:
        """The df catalog lives in one database."""
        return (params.get("database") or params.get("user")) == self.upstream.dbname

    def inspect(self, session: ClientSession, msg_type: int, message: bytes) -> bytes | None:
        link = session.upstream
        parameters = link.tracker.parameters if link is not None else {}
        if not self._serves_catalog(session.params):
            return self.interceptor.settings_rows(parameters, msg_type, message)
        decision = self.interceptor.inspect(parameters, msg_type, message)
        if decision.creates_extension and link is not None:
            link.rename_tags(EXTENSION_MARKER, EXTENSION_TAG)
        if decision.positions_errors and link is not None and link.tracker.at_boundary:
            link.position_errors(decision.position_hints)
        return decision.replacement


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS for client connections (--tls-cert/--tls-key)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
