"""A latency link: a TCP relay that holds every chunk for a fixed delay in each direction.

    python -m tests.bench.link --upstream-port 5432 --delay-ms 17.5 [--port P] [--stats F]

This kernel has no netem, so the benchmarks put this between a system under test and
PostgreSQL. Each chunk read from one side is written to the other as one write, at its
arrival time plus the delay: never earlier, never merged with or split from its neighbours,
never ahead of a chunk that arrived before it (one FIFO and one timer per direction, armed
with `loop.call_at` for the head of the queue). A close is held like data, so it cannot
overtake the bytes before it. TCP_NODELAY on both sides. Only data is delayed: the TCP
handshake is with the link, so opening a connection costs its startup messages' round trips
but not the handshake's.

A chunk is released only once time.monotonic() has reached its due time: late by the
loop's own latency, which --stats reports, never early. It runs on asyncio's own loop by
default, not uvloop: libuv's timers count whole milliseconds and may fire up to one early,
so under uvloop the timer is armed for the next whole millisecond at or after the due time
(libuv's clock and time.monotonic() are both CLOCK_MONOTONIC), which made chunks 1.9 ms late
on average (a 2 ms round trip took 5.6 ms, p50) where asyncio's loop was 0.2 ms late (2.7 ms),
at twice uvloop's CPU per chunk (about 45 against 21 µs with 64 connections busy).

The process prints `link ready PORT` once it listens; on SIGTERM it writes its counters as
JSON to --stats (chunks and bytes each way, how late chunks were released) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

DESCRIPTION = "A TCP relay that holds every chunk for a fixed delay in each direction."
LATE_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class DirectionStats:
    """What one direction carried, over all connections."""

    chunks: int = 0
    bytes: int = 0
    late_ms_max: float = 0.0
    late_ms_sum: float = 0.0
    late_le: list[int] | None = None  # cumulative counts per LATE_BUCKETS_MS

    def released(self, size: int, late_s: float) -> None:
        late_ms = late_s * 1000
        self.chunks += 1
        self.bytes += size
        self.late_ms_sum += late_ms
        self.late_ms_max = max(self.late_ms_max, late_ms)
        if self.late_le is None:
            self.late_le = [0] * len(LATE_BUCKETS_MS)
        for i, bound in enumerate(LATE_BUCKETS_MS):
            if late_ms <= bound:
                self.late_le[i] += 1


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Direction:
    """One way of one connection: chunks queued with their due time, released in order."""

    __slots__ = ("delay", "dest", "ended", "loop", "queue", "stats", "timer", "whole_ms")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, stats: DirectionStats
    ) -> None:
        self.loop, self.delay, self.stats = loop, delay, stats
        self.whole_ms = "uvloop" in type(loop).__module__  # see the module docstring
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.dest: asyncio.Transport | None = None  # None until the upstream is connected
        self.ended = False  # the sender's close was queued: nothing follows it

    def push(self, chunk: bytes | None) -> None:
        """Queue a chunk (None: the sender closed) for arrival time + delay."""
        if self.ended:
            return
        self.ended = chunk is None
        if chunk is not None and self.delay == 0 and not self.queue and self.dest is not None:
            self.stats.released(len(chunk), 0.0)  # no delay: a bare pipe
            self.dest.write(chunk)
            return
        due = time.monotonic() + self.delay
        self.queue.append((due, chunk))
        if self.timer is None and self.dest is not None:
            self._arm(due)

    def attach(self, dest: asyncio.Transport) -> None:
        """The destination exists now: release what is due, arm for the rest."""
        self.dest = dest
        if self.queue and self.timer is None:
            self._arm(self.queue[0][0])

    def _arm(self, due: float) -> None:
        at = math.ceil(due * 1000) / 1000 if self.whole_ms else due
        self.timer = self.loop.call_at(at, self._release)

    def _release(self) -> None:
        self.timer = None
        dest = self.dest
        assert dest is not None
        now = time.monotonic()
        queue = self.queue
        while queue and queue[0][0] <= now:
            due, chunk = queue.popleft()
            if chunk is None or dest.is_closing():
                queue.clear()
                dest.close()
                return
            self.stats.released(len(chunk), now - due)
            dest.write(chunk)  # one write per chunk received: segments stay as they came
        if queue:
            self._arm(queue[0][0])


class _Upstream(asyncio.Protocol):
    """The link's connection to the server; what it reads goes down `reply`."""

    def __init__(self, client: _Client) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.client.reply.push(data)

    def eof_received(self) -> bool:
        self.client.reply.push(None)
        return True  # the held close ends the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.reply.push(None)

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class _Client(asyncio.Protocol):
    """One accepted connection; what it reads goes up `request`."""

    link: Link

    def __init__(self, link: Link) -> None:
        self.link = link
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        _nodelay(transport)
        loop = asyncio.get_running_loop()
        self.request = Direction(loop, self.link.delay, self.link.up)
        self.reply = Direction(loop, self.link.delay, self.link.down)
        self.reply.attach(self.transport)
        self.connecting = loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self), self.link.upstream_host, self.link.upstream_port
            )
        except OSError:
            self.transport.close()
            return
        if self.closed:
            upstream.close()
            return
        self.request.attach(upstream)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.request.push(data)

    def eof_received(self) -> bool:
        self.request.push(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.request.push(None)

    def pause_writing(self) -> None:
        if self.request.dest is not None:
            self.request.dest.pause_reading()

    def resume_writing(self) -> None:
        if self.request.dest is not None:
            self.request.dest.resume_reading()


@dataclass
class Link:
    """The relay's settings and counters: client→server is `up`, server→client `down`."""

    upstream_host: str
    upstream_port: int
    delay: float  # seconds, each way
    up: DirectionStats
    down: DirectionStats

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Listen (port 0: any free one) and relay every connection with the delay."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Client(self), host, port)

    def stats(self) -> dict[str, object]:
        return {
            "delay_ms": self.delay * 1000,
            "late_buckets_ms": list(LATE_BUCKETS_MS),
            "up": asdict(self.up),
            "down": asdict(self.down),
        }


def new_link(upstream_host: str, upstream_port: int, delay_ms: float) -> Link:
    return Link(upstream_host, upstream_port, delay_ms / 1000, DirectionStats(), DirectionStats())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.link", description=DESCRIPTION)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    p.add_argument("--upstream-host", default="127.0.0.1")
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True, help="held each way (rtt / 2)")
    p.add_argument("--stats", type=Path, help="write the counters here as JSON on exit")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="asyncio's own loop (default: timers to the microsecond) or uvloop (less CPU "
        "per chunk, timers to the millisecond)",
    )
    return p.parse_args(argv)


async def _run(args: argparse.Namespace) -> Link:
    link = new_link(args.upstream_host, args.upstream_port, args.delay_ms)
    server = await link.serve(args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"link ready {port}", flush=True)
    await stop.wait()
    server.close()
    return link


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("uvloop not installed: using asyncio's loop", file=sys.stderr)
            link = asyncio.run(_run(args))
        else:
            link = uvloop.run(_run(args))
    else:
        link = asyncio.run(_run(args))
    if args.stats is not None:
        args.stats.write_text(json.dumps(link.stats(), indent=2) + "\n")
    return 0
