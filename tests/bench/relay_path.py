"""The relay's Python work per pgbench transaction against the bare pipe's (no sockets).

    python -m tests.bench.relay_path [--rounds N]

Feeds one pgbench `-S` request and its reply through `ClientSession.data_received` and
`UpstreamLink.data_received` (a session of the catalog's database, logged in, notice tap
on, as in `tests.bench.passthrough`) and through the bare pipe's two `data_received`
(`tests/bench/passthrough/pipe.py`), both writing into the same do-nothing transport.
The difference is what pgdurable adds to a transaction in Python; the kernel's and
uvloop's share, the same for both, is what `tests.bench.passthrough` measures on top.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from engine.engine import RELAYED_NOTICES
from pgdurable_proxy.dsn import parse_dsn
from pgdurable_proxy.intercept import Interceptor
from pgdurable_proxy.metrics import Metrics
from pgdurable_proxy.relay import ClientSession, UpstreamLink
from pgdurable_proxy.server import ProxyServer
from pgdurable_proxy.wire.frames import ACCELERATED
from pgdurable_proxy.wire.messages import frame
from tests.bench.passthrough import pipe

_SQL = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
_BIND = b"\0\0\0\0\0\1\0\0\0\x06123456\0\0"
_ROWS = b"".join(
    [
        frame(b"T", b"\0\1abalance\0" + b"\0\0\x40\x02\0\3\0\0\0\x17\0\4\xff\xff\xff\xff\0\0"),
        frame(b"D", b"\0\1\0\0\0\0010"),
        frame(b"C", b"SELECT 1\0"),
        frame(b"Z", b"I"),
    ]
)
# What libpq sends per pgbench -S transaction, and PostgreSQL's reply, per -M mode.
TRANSACTIONS: dict[str, tuple[bytes, bytes]] = {
    "simple": (frame(b"Q", _SQL.replace(b"$1", b"123456") + b"\0"), _ROWS),
    "extended": (
        frame(b"P", b"\0" + _SQL + b"\0\0\0")
        + frame(b"B", b"\0" + _BIND)
        + frame(b"D", b"P\0")
        + frame(b"E", b"\0\0\0\0\0")
        + frame(b"S", b""),
        frame(b"1", b"") + frame(b"2", b"") + _ROWS,
    ),
    "prepared": (
        frame(b"B", b"\0P0_1" + _BIND)
        + frame(b"D", b"P\0")
        + frame(b"E", b"\0\0\0\0\0")
        + frame(b"S", b""),
        frame(b"2", b"") + _ROWS,
    ),
}


class _Sink:
    """A transport that takes writes and drops them."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def relay_pair() -> tuple[ClientSession, UpstreamLink]:
    """A logged-in session of the catalog's database, notice tap on, as the bench runs."""
    metrics = Metrics()
    server = ProxyServer(
        parse_dsn("postgresql://postgres@127.0.0.1:5432/bench"),
        Interceptor(metrics),
        metrics,
        notice_markers=RELAYED_NOTICES,
    )
    session = ClientSession(server)
    session.params = {"user": "postgres", "database": "bench"}
    link = UpstreamLink(session)
    session.upstream = link
    server.startup_parameters(session)  # installs the notice tap
    sink = _Sink()
    session.transport = session.upstream_transport = link.transport = sink  # type: ignore[assignment]
    session.logged_in()
    return session, link


def pipe_pair() -> tuple[pipe._Client, pipe._Upstream]:
    client = pipe._Client()
    client.transport = client.upstream = _Sink()  # type: ignore[assignment]
    return client, pipe._Upstream(client)


def _per_call(stmt: Callable[[], object], rounds: int, number: int = 50_000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=rounds)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.relay_path")
    parser.add_argument("--rounds", type=int, default=15, help="timeit repeats; minimum kept")
    args = parser.parse_args()
    print(f"framing: {'compiled' if ACCELERATED else 'pure Python'}")
    print("mode       pipe µs/txn  relay µs/txn  added µs/txn")
    for mode, (request, reply) in TRANSACTIONS.items():
        session, link = relay_pair()
        client, upstream = pipe_pair()

        def relay(
            s: ClientSession = session, u: UpstreamLink = link, q: bytes = request, r: bytes = reply
        ) -> None:
            s.data_received(q)
            u.data_received(r)

        def bare(
            c: pipe._Client = client,
            u: pipe._Upstream = upstream,
            q: bytes = request,
            r: bytes = reply,
        ) -> None:
            c.data_received(q)
            u.data_received(r)

        pipe_us = _per_call(bare, args.rounds)
        relay_us = _per_call(relay, args.rounds)
        print(f"{mode:10s} {pipe_us:11.3f}  {relay_us:12.3f}  {relay_us - pipe_us:12.3f}")


if __name__ == "__main__":
    main()
