"""PostgreSQL outages: which errors mean "the server went away", and how they are logged.

A PostgreSQL restart (or crash, failover, network cut) shows up as refused connections,
connections closed mid-operation, 57P01/57P02 (admin or crash shutdown), 57P03 (the
database system is starting up) and SQLSTATE class 08. None of these says anything about
a step's SQL: a step that met one either never started or was rolled back with its
connection (a transaction that did not commit is gone when its backend is). The engine
waits and runs it again; a real SQL error still fails the step.

While the server is away every loop and every step meets the same errors; they are logged
once per kind, at warning, and their number when the server answers again:

    event=upstream_unavailable kind=ConnectionRefusedError error=...
    event=upstream_back failures=312 seconds=4.2
"""

from __future__ import annotations

import logging
import random
import time

import asyncpg

from engine.errors import StepNotRun

log = logging.getLogger("pgdurable.engine")

# admin_shutdown, crash_shutdown, cannot_connect_now: the backend went (or is not there yet)
SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})
RETRY_FIRST_DELAY = 0.05  # seconds before a step that met an outage tries again,
RETRY_MAX_DELAY = 2.0  # doubled each time up to this


# A step whose own connection dies this many times while its statement runs fails: a
# restart costs a step one such loss (its next tries fail to connect), whereas a statement
# that ends its own backend (pg_terminate_backend(pg_backend_pid())) or crashes the server
# would otherwise be run again forever.
MAX_LOSSES_WHILE_RUNNING = 5


def connection_lost(exc: BaseException) -> bool:
    """Does `exc` mean PostgreSQL could not be reached or the connection died (rather than
    an error of the statement sent)?"""
    if isinstance(exc, (StepNotRun, OSError, asyncpg.ConnectionDoesNotExistError)):
        return True  # TimeoutError, ConnectionRefusedError and ConnectionResetError are OSErrors
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state in SERVER_GONE or state.startswith("08")
    if isinstance(exc, asyncpg.InterfaceError):  # e.g. ending a transaction on a connection
        context = exc.__context__  # that died inside it: what happened is the context
        return context is not None and connection_lost(context)
    return False


def _kind(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, StepNotRun) and exc.__cause__ else exc
    state = getattr(cause, "sqlstate", None)
    return type(cause).__name__ + (f"/{state}" if state else "")


class Outage:
    """Counts the failures of one outage; logs each kind once and the end with the count."""

    def __init__(self) -> None:
        self.failures = 0
        self._since: float | None = None
        self._kinds: set[str] = set()

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, where: str) -> None:
        """An operation met `exc` (connection_lost(exc) is true)."""
        self.failures += 1
        if self._since is None:
            self._since = time.monotonic()
        kind = _kind(exc)
        if kind not in self._kinds:
            self._kinds.add(kind)
            log.warning(
                "event=upstream_unavailable kind=%s where=%s error=%r", kind, where, str(exc)
            )

    def answered(self) -> None:
        """An operation succeeded: if an outage was going on, it ended."""
        if self._since is None:
            return
        log.warning(
            "event=upstream_back failures=%d seconds=%.1f kinds=%s",
            self.failures,
            time.monotonic() - self._since,
            ",".join(sorted(self._kinds)),
        )
        self.failures, self._since = 0, None
        self._kinds.clear()


def retry_delay(attempt: int) -> float:
    """Seconds before the `attempt`-th retry (1, 2, ...): doubling, capped, with jitter so
    that the steps waiting for a restarted server do not all knock at the same instant."""
    delay: float = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2.0 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)
