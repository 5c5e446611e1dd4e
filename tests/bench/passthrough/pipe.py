"""The floor of any CPython relay: a bare uvloop asyncio.Protocol byte pipe, no framing.

    python -m tests.bench.passthrough.pipe LISTEN_PORT UPSTREAM_PORT

Run by the passthrough bench as its "pipe" target, so pgdurable's cost is compared with what
the interpreter and event loop alone cost on the same machine in the same run.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class _Client(asyncio.Protocol):
    upstream_port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.upstream: asyncio.Transport | None = None
        self.pending = b""
        _nodelay(transport)
        self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(
            lambda: _Upstream(self), "127.0.0.1", self.upstream_port
        )
        if self.pending:
            upstream.write(self.pending)
        self.upstream = upstream

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending += data
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _serve(listen: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Client, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    _Client.upstream_port = int(sys.argv[2])
    uvloop.run(_serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
