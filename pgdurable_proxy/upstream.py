"""Open connections to the upstream PostgreSQL, with TLS as the DSN's sslmode asks."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Callable
from typing import cast

from pgdurable_proxy.dsn import UpstreamDSN
from pgdurable_proxy.wire.startup import SSL_REQUEST_CODE

_SSL_REQUEST = struct.pack("!II", 8, SSL_REQUEST_CODE)
CONNECT_TIMEOUT = 10.0


class UpstreamUnavailable(Exception):
    """PostgreSQL could not be reached; SQLSTATE 08006 for the client."""

    sqlstate = "08006"


def client_ssl_context(dsn: UpstreamDSN) -> ssl.SSLContext:
    """The TLS context libpq would build for this sslmode."""
    ctx = ssl.create_default_context(cafile=dsn.sslrootcert)
    if dsn.sslmode != "verify-full":
        ctx.check_hostname = False
    if dsn.sslmode in ("prefer", "require", "allow"):
        ctx.verify_mode = ssl.CERT_NONE
    if dsn.sslcert and dsn.sslkey:
        ctx.load_cert_chain(dsn.sslcert, dsn.sslkey)
    return ctx


async def open_upstream(
    dsn: UpstreamDSN, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Connect to PostgreSQL; negotiate TLS first unless sslmode is disable/allow."""
    try:
        return await asyncio.wait_for(_open(dsn, factory), CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        where = dsn.host if dsn.is_unix_socket else f"{dsn.host}:{dsn.port}"
        raise UpstreamUnavailable(f"cannot reach PostgreSQL at {where}: {exc}") from exc


async def _open(
    dsn: UpstreamDSN, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    loop = asyncio.get_running_loop()
    if dsn.is_unix_socket:
        path = f"{dsn.host}/.s.PGSQL.{dsn.port}"
        transport, protocol = await loop.create_unix_connection(factory, path)
        return transport, protocol
    if dsn.sslmode in ("disable", "allow"):
        transport, protocol = await loop.create_connection(factory, dsn.host, dsn.port)
        _nodelay(transport)
        return transport, protocol
    sock, tls = await _negotiate_tls(loop, dsn)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        transport, protocol = await loop.create_connection(
            factory, sock=sock, ssl=client_ssl_context(dsn), server_hostname=dsn.host
        )
    else:
        transport, protocol = await loop.create_connection(factory, sock=sock)
    return transport, protocol


async def _negotiate_tls(
    loop: asyncio.AbstractEventLoop, dsn: UpstreamDSN
) -> tuple[socket.socket, bool]:
    """Connect and send SSLRequest; return the socket and whether the server said yes."""
    infos = await loop.getaddrinfo(dsn.host, dsn.port, type=socket.SOCK_STREAM)
    family, _, proto, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, addr)
        await loop.sock_sendall(sock, _SSL_REQUEST)
        answer = await loop.sock_recv(sock, 1)
    except BaseException:
        sock.close()
        raise
    if answer == b"S":
        return sock, True
    if answer == b"N" and dsn.sslmode == "prefer":
        return sock, False
    sock.close()
    if answer == b"N":
        raise ssl.SSLError(f"server does not support SSL, but sslmode={dsn.sslmode}")
    raise OSError("unexpected answer to SSLRequest")


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _OneShot(asyncio.Protocol):
    """Writes one packet and closes: used to forward CancelRequests."""

    def __init__(self, packet: bytes) -> None:
        self.packet = packet
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.Transport, transport)
        writer.write(self.packet)
        writer.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def send_cancel(dsn: UpstreamDSN, packet: bytes) -> None:
    """Forward a CancelRequest packet verbatim on a fresh connection."""
    protocol = _OneShot(packet)
    try:
        await open_upstream(dsn, lambda: protocol)
        await asyncio.wait_for(protocol.done, CONNECT_TIMEOUT)
    except (UpstreamUnavailable, TimeoutError):
        return


def cancel_packet(backend_key: bytes) -> bytes:
    """A CancelRequest for a BackendKeyData body (pid + secret of any 3.x length)."""
    from pgdurable_proxy.wire.startup import CANCEL_REQUEST_CODE

    return struct.pack("!II", 8 + len(backend_key), CANCEL_REQUEST_CODE) + backend_key
