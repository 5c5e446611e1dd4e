"""What the df.start backends wait on, sampled from pg_stat_activity every few ms."""

from __future__ import annotations

import threading
from collections import Counter

import psycopg

_SAMPLE = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait event)')
FROM pg_stat_activity
WHERE state = 'active' AND usename = %s AND query ILIKE '%%df.start%%'
  AND pid <> pg_backend_pid()
"""


class WaitSampler:
    """A thread counting the wait events of `role`'s active df.start statements."""

    def __init__(self, superuser_dsn: str, role: str, every_s: float = 0.005) -> None:
        self.dsn = superuser_dsn
        self.role = role
        self.every_s = every_s
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wait-sampler", daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(self.every_s):
                self.samples += 1
                for (event,) in conn.execute(_SAMPLE, (self.role,)).fetchall():
                    self.counts[event] += 1

    def top(self, n: int = 5) -> list[tuple[str, int]]:
        return self.counts.most_common(n)
