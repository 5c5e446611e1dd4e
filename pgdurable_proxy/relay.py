"""One client session: the startup loop, then a byte relay framed header-only both ways.

The hot path is `ClientSession.data_received` (relay state) and `UpstreamLink.data_received`;
both forward the original bytes and do only header arithmetic. See wire/frames.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from pgdurable_proxy.dsn import UpstreamDSN
from pgdurable_proxy.metrics import Metrics
from pgdurable_proxy.pg_durable_settings import PREFIX
from pgdurable_proxy.upstream import (
    UpstreamUnavailable,
    cancel_packet,
    open_upstream,
    send_cancel,
)
from pgdurable_proxy.wire import startup
from pgdurable_proxy.wire.errors import ProtocolViolation
from pgdurable_proxy.wire.frames import IDLE, ClientFramer, ServerTracker
from pgdurable_proxy.wire.messages import TERMINATE, error_response, strip_channel_binding
from pgdurable_proxy.wire.rewrite import TagRenamer, UntilReady, error_positioner

log = logging.getLogger("pgdurable.relay")


class SessionHost(Protocol):
    """What a session needs from the server that accepted it."""

    upstream: UpstreamDSN
    tls_context: ssl.SSLContext | None
    wake: Callable[[], None]
    authentication_timeout: float
    metrics: Metrics

    def register(self, session: ClientSession) -> bool: ...
    def startup_parameters(self, session: ClientSession) -> bytes: ...
    def unregister(self, session: ClientSession) -> None: ...
    def inspect(self, session: ClientSession, msg_type: int, message: bytes) -> bytes | None: ...


class ClientSession(asyncio.Protocol):
    """The client side of one 1:1 session."""

    def __init__(self, host: SessionHost) -> None:
        self.host = host
        self.metrics = host.metrics
        self.transport: asyncio.Transport | None = None
        self.upstream: UpstreamLink | None = None
        self.upstream_transport: asyncio.Transport | None = None
        self.framer = ClientFramer(self._inspect, inspecting=False)  # until logged in
        self.params: dict[str, str] = {}
        self._startup_buffer = bytearray()
        self._closing = False
        self._admitted = True  # False: over --max-client-connections, refused at startup
        self._login_timer: asyncio.TimerHandle | None = None
        self._tls_pending = False
        # a request that gives the engine work went upstream (a wake notice, a first
        # document): run `when_idle` (wake the engine, hand it the document) once the
        # session is idle after the ReadyForQuery that follows this many (None: nothing
        # asked), the answer to that request (committed, or ended)
        self.wake_after: int | None = None
        self.when_idle: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._admitted = self.host.register(self)
        if self._closing:
            return
        self._login_timer = asyncio.get_running_loop().call_later(
            self.host.authentication_timeout, self._login_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._stop_login_timer()
        self.host.unregister(self)
        link = self.upstream
        if link is None or link.transport is None or link.transport.is_closing():
            return
        if self.framer.requests > link.tracker.ready_count and link.tracker.backend_key:
            self._spawn(send_cancel(self.host.upstream, cancel_packet(link.tracker.backend_key)))
        if self.framer.at_boundary:
            link.transport.write(TERMINATE)
        link.transport.close()

    def pause_writing(self) -> None:
        if self.upstream_transport is not None:
            self.upstream_transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream_transport is not None:
            self.upstream_transport.resume_reading()

    # -- login -----------------------------------------------------------------------
    def logged_in(self) -> None:
        """The server accepted the login (first ReadyForQuery): statements may be looked at."""
        self._stop_login_timer()
        self.framer.start_inspecting()

    def _stop_login_timer(self) -> None:
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None

    def _login_timed_out(self) -> None:
        """authentication_timeout: from the first byte to the end of the login."""
        self._login_timer = None
        if self._closing or self.transport is None:
            return
        log.info("event=authentication_timeout seconds=%s", self.host.authentication_timeout)
        if self._tls_pending:  # mid-handshake: nothing can be said in plaintext
            self._drop()
            return
        self.fail("57014", "canceling authentication due to timeout")

    def refuse(self) -> None:
        """Answer FATAL 53300 as PostgreSQL does when max_connections is reached."""
        self.fail("53300", "sorry, too many clients already")

    # -- data ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.metrics.client_bytes += len(data)  # per chunk, not per message: the hot path
        upstream = self.upstream_transport
        if upstream is not None:
            try:
                out = self.framer.feed(data)
            except ProtocolViolation as exc:
                self._violated(exc)
                return
            if out:
                upstream.write(out)
            return
        self._startup_buffer += data
        try:
            self._drain_startup()
        except ProtocolViolation as exc:
            self._violated(exc)

    def _violated(self, exc: ProtocolViolation) -> None:
        self.metrics.protocol_violations_total += 1
        self.fail(exc.sqlstate, str(exc))

    def _drain_startup(self) -> None:
        """Handle complete first packets: SSL/GSS answers, cancel, StartupMessage."""
        buf = self._startup_buffer
        while self.upstream is None and not self._closing:
            length = startup.startup_packet_length(buf)
            if length is None or len(buf) < length:
                return
            packet = bytes(buf[:length])
            del buf[:length]
            self._on_startup_packet(startup.parse_startup_packet(packet))

    def _on_startup_packet(self, packet: startup.StartupPacket) -> None:
        assert self.transport is not None
        if isinstance(packet, startup.SSLRequest):
            self._on_ssl_request()
        elif isinstance(packet, startup.GSSEncRequest):
            self.transport.write(b"N")
        elif isinstance(packet, startup.CancelRequest):
            self._closing = True
            self._spawn(self._forward_cancel(packet.raw))
        elif not self._admitted:
            self.refuse()
        else:
            self.params = packet.params
            self.transport.pause_reading()
            self.upstream = UpstreamLink(self)
            self._spawn(self._connect(packet))

    def _on_ssl_request(self) -> None:
        assert self.transport is not None
        if self._startup_buffer:
            # Bytes after SSLRequest would be read as plaintext (CVE-2021-23214).
            raise ProtocolViolation("received unencrypted data after SSL request")
        ctx = self.host.tls_context
        if ctx is None or self.transport.get_extra_info("sslcontext") is not None:
            self.transport.write(b"N")
            return
        self.transport.write(b"S")
        self.transport.pause_reading()
        self._tls_pending = True
        self._spawn(self._start_tls(ctx))

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(self.transport, self, ctx, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.info("event=tls_failed reason=%s", exc)
            self._drop()
            return
        finally:
            self._tls_pending = False
        self.transport = cast(asyncio.Transport, tls)

    def _drop(self) -> None:
        """Abort a connection whose TLS handshake did not finish: this protocol will not
        hear connection_lost (the TLS layer never handed the connection over), so forget
        the session here."""
        self._closing = True
        self._stop_login_timer()
        if self.transport is not None:
            self.transport.abort()
        self.host.unregister(self)

    async def _forward_cancel(self, packet: bytes) -> None:
        assert self.transport is not None
        self.transport.close()
        await send_cancel(self.host.upstream, packet)

    async def _connect(self, packet: startup.StartupMessage) -> None:
        assert self.transport is not None and self.upstream is not None
        try:
            transport, _ = await open_upstream(self.host.upstream, lambda: self.upstream)  # type: ignore[arg-type,return-value]
        except UpstreamUnavailable as exc:
            log.warning("event=upstream_unavailable reason=%s", exc)
            self.fail(exc.sqlstate, f"pgdurable: {exc}")
            return
        except Exception as exc:  # an internal error must not leave the client hanging
            log.exception("event=upstream_connect_failed")
            self.fail("XX000", f"pgdurable: internal error while connecting upstream: {exc}")
            return
        if self._closing or self.transport.is_closing():
            transport.close()
            return
        # pgdurable's settings under pg_durable's names: the server makes them placeholders
        # the session can SHOW (startup parameters come after `options`, so these win)
        extra = self.host.startup_parameters(self)
        transport.write(startup.with_parameters(packet, extra, PREFIX))
        self.upstream_transport = transport
        leftover = bytes(self._startup_buffer)
        self._startup_buffer.clear()
        if leftover:
            self.data_received(leftover)
        self.transport.resume_reading()

    # -- interception and errors ---------------------------------------------------------
    def _inspect(self, msg_type: int, message: bytes) -> bytes | None:
        try:
            return self.host.inspect(self, msg_type, message)
        except Exception:  # a bug: log it, and let the server have the statement as sent
            log.exception("event=inspect_failed")
            return None

    def fail(self, sqlstate: str, message: str) -> None:
        """Tell the client FATAL <sqlstate> when the stream allows it, then close both sides."""
        self._closing = True
        transport = self.transport
        link = self.upstream
        if transport is not None and not transport.is_closing():
            if link is None or link.tracker.at_boundary:
                transport.write(error_response(sqlstate, message, severity="FATAL"))
            transport.close()
        if link is not None and link.transport is not None:
            link.transport.close()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Close the session at once (shutdown timeout)."""
        if self.transport is not None:
            self.fail("57P01", "terminating connection due to pgdurable shutdown")


def _unchanged(message: bytes) -> bytes:
    return message


class UpstreamLink(asyncio.Protocol):
    """The PostgreSQL side of one session: raw pipe to the client, boundaries tracked."""

    def __init__(self, client: ClientSession) -> None:
        self.client = client
        self.metrics = client.metrics
        self.transport: asyncio.Transport | None = None
        self.tracker = ServerTracker()
        self._auth: UntilReady | None = None  # set while auth messages need rewriting
        self._positioner: UntilReady | None = None
        self._renamer: TagRenamer | None = None
        self._rewriting = False  # any of the three is set: replies take the longer way

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        client_tls = (
            self.client.transport is not None
            and self.client.transport.get_extra_info("sslcontext") is not None
        )
        # Frame the login until its ReadyForQuery: that is when the session may be inspected.
        strip = transport.get_extra_info("sslcontext") is not None and not client_tls
        self._auth = UntilReady(strip_channel_binding if strip else _unchanged)
        self._rewriting = True

    def position_errors(self, hints: tuple[tuple[str, int], ...] = ()) -> None:
        """Frame replies until the next ReadyForQuery to add positions to errors."""
        if self._positioner is None or self._positioner.done:
            self._positioner = error_positioner(hints)
            self._rewriting = True

    def rename_tags(self, marker: str, tag: str) -> None:
        """From now on, the CommandComplete after a notice whose text is `marker` (taken
        out) carries `tag`: the statement was rewritten into one with another tag."""
        if self._renamer is None:
            skip, sent = self.tracker.unfinished()  # the renamer follows the tracker
            self._renamer = TagRenamer(marker, tag, skip, sent)
            self._rewriting = True

    def wake_when_idle(self) -> None:
        """Wake the engine once the session is idle again after the answer to the request
        in progress (its transaction committed or ended), not before: a notice of that
        request may arrive first, while the session still shows the last request's idle
        ReadyForQuery."""
        self.act_when_idle(self.client.host.wake)

    def act_when_idle(self, action: Callable[[], None]) -> None:
        """Run `action` when the session is idle again after the answer to the request in
        progress, with whatever else waits for that moment (once each)."""
        client = self.client
        client.wake_after = self.tracker.ready_count
        if action not in client.when_idle:
            client.when_idle.append(action)

    def data_received(self, data: bytes) -> None:
        self.metrics.server_bytes += len(data)  # per chunk, as received
        # less pgdurable's own notices, on a catalog session
        data = self._rewritten(data) if self._rewriting else self.tracker.feed(data)
        client = self.client
        tracker = self.tracker
        if (
            client.wake_after is not None
            and tracker.ready_count > client.wake_after
            and tracker.status == IDLE
            and tracker.at_boundary
        ):
            client.wake_after = None
            actions, client.when_idle = client.when_idle, []
            for action in actions:
                action()
        if client.transport is not None and data:
            client.transport.write(data)

    def _rewritten(self, data: bytes) -> bytes:
        """The login, errors to position and tags to rename: framed around the tracker."""
        if self._auth is not None:
            data = self._auth.feed(data)
            if self._auth.done:
                self._auth = None
                self.client.logged_in()
        if self._positioner is not None:
            data = self._positioner.feed(data)
            if self._positioner.done:
                self._positioner = None
        data = self.tracker.feed(data)
        if self._renamer is not None:
            data = self._renamer.feed(data)
        self._rewriting = not (
            self._auth is None and self._positioner is None and self._renamer is None
        )
        return data

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if client._closing or client.transport is None or client.transport.is_closing():
            return
        client._closing = True
        expected = self.tracker.fatal_seen or client.framer.terminated
        if self.tracker.at_boundary and not expected:
            client.transport.write(
                error_response(
                    "08006",
                    "pgdurable: the connection to the upstream PostgreSQL server was lost",
                    severity="FATAL",
                )
            )
        client.transport.close()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()
