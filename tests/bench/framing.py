"""Micro-benchmark of the relay's per-message work (no sockets).

    python -m tests.bench.framing

Reports µs per call of ClientFramer.feed on pgbench -S messages and ServerTracker.feed on
the matching replies, in the framing this process uses (compiled when built); the whole
per-transaction path against the bare pipe's is `python -m tests.bench.relay_path`.
"""

from __future__ import annotations

import timeit

from pgdurable_proxy.wire.frames import ACCELERATED, ClientFramer, ServerTracker
from pgdurable_proxy.wire.messages import frame

SIMPLE_Q = frame(b"Q", b"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;\0")
EXTENDED = b"".join(
    [
        frame(b"P", b"\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\0"),
        frame(b"B", b"\0\0\0\0\0\1\0\0\0\x06123456\0\0"),
        frame(b"D", b"P\0"),
        frame(b"E", b"\0\0\0\0\0"),
        frame(b"S", b""),
    ]
)
PREPARED = b"".join(
    [
        frame(b"B", b"\0P0_1\0\0\0\0\1\0\0\0\x06123456\0\0"),
        frame(b"E", b"\0\0\0\0\0"),
        frame(b"S", b""),
    ]
)
REPLY = b"".join(
    [
        frame(b"T", b"\0\1abalance\0" + b"\0" * 18),
        frame(b"D", b"\0\1\0\0\0\0040"),
        frame(b"C", b"SELECT 1\0"),
        frame(b"Z", b"I"),
    ]
)


def _per_call(stmt: object, number: int = 200_000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    framer = ClientFramer(lambda t, m: None)
    tracker = ServerTracker()
    rows = [
        ("ClientFramer.feed simple Q", _per_call(lambda: framer.feed(SIMPLE_Q))),
        ("ClientFramer.feed P/B/D/E/S", _per_call(lambda: framer.feed(EXTENDED))),
        ("ClientFramer.feed B/E/S", _per_call(lambda: framer.feed(PREPARED))),
        ("ServerTracker.feed T/D/C/Z", _per_call(lambda: tracker.feed(REPLY))),
        ("empty lambda (loop overhead)", _per_call(lambda: None)),
    ]
    print(f"framing: {'compiled' if ACCELERATED else 'pure Python'}")
    for name, micros in rows:
        print(f"{name:32s} {micros:6.2f} µs")


if __name__ == "__main__":
    main()
