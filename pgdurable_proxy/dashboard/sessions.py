"""Dashboard sessions: signed cookies that name a server-side session, which holds the
signed-in role's own PostgreSQL connection (never its password) and a CSRF token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgdurable_proxy.dashboard.queries import RoleConnection

IDLE_SECONDS = 300.0  # a session unused this long is ended and its connection closed
LIFETIME_SECONDS = 8 * 3600.0  # and any session this old, used or not
MAX_SESSIONS = 64  # each holds a PostgreSQL connection
REAP_SECONDS = 30.0  # how often ended sessions' connections are looked for


class TooManySessions(Exception):
    """MAX_SESSIONS sessions are open; the sign-in is refused."""


class CookieSigner:
    """HMAC-SHA-256 signatures for cookie values, under a key made when the process starts
    (sessions live in this process's memory, so nothing signed must outlive it)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def sign(self, purpose: str, value: str) -> str:
        """`value` with its signature for `purpose` appended."""
        return f"{value}.{self._mac(purpose, value)}"

    def unsign(self, purpose: str, signed: str | None) -> str | None:
        """The value of a signed cookie, or None when it is missing or its signature is
        not ours for `purpose`."""
        if not signed or "." not in signed:
            return None
        value, _, mac = signed.rpartition(".")
        return value if hmac.compare_digest(mac, self._mac(purpose, value)) else None

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}|{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(eq=False, slots=True)
class Session:
    """One signed-in browser: the role PostgreSQL let in, on its own connection."""

    sid: str
    role: str
    csrf: str
    connection: RoleConnection
    started: float
    last_used: float
    flash: str | None = None  # one message for the next page (the result of a POST)

    def csrf_matches(self, token: str | None) -> bool:
        """True when a request carries this session's CSRF token."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())

    def take_flash(self) -> str | None:
        """The pending message, once."""
        message, self.flash = self.flash, None
        return message


class SessionStore:
    """Open sessions by id; ends idle and old ones and closes their connections."""

    def __init__(
        self,
        idle: float = IDLE_SECONDS,
        lifetime: float = LIFETIME_SECONDS,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle, self._lifetime, self._limit, self._clock = idle, lifetime, limit, clock
        self._sessions: dict[str, Session] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, connection: RoleConnection) -> Session:
        """A new session for a connection that just signed in."""
        if len(self._sessions) >= self._limit:
            raise TooManySessions(f"{self._limit} dashboard sessions are open; try again later")
        now = self._clock()
        session = Session(
            sid=secrets.token_urlsafe(32),
            role=connection.role,
            csrf=secrets.token_urlsafe(32),
            connection=connection,
            started=now,
            last_used=now,
        )
        self._sessions[session.sid] = session
        return session

    async def find(self, sid: str | None) -> Session | None:
        """The live session of that id (marked used), or None; an expired one is ended."""
        session = self._sessions.get(sid) if sid else None
        if session is None:
            return None
        if self._expired(session, self._clock()) or session.connection.closed:
            await self.end(session)
            return None
        session.last_used = self._clock()
        return session

    async def end(self, session: Session) -> None:
        """Forget a session and close its connection."""
        self._sessions.pop(session.sid, None)
        await session.connection.close()

    async def end_expired(self) -> None:
        """End every idle, old or disconnected session."""
        now = self._clock()
        for session in list(self._sessions.values()):
            if self._expired(session, now) or session.connection.closed:
                await self.end(session)

    def start(self) -> None:
        """Begin ending expired sessions in the background."""
        self._reaper = asyncio.create_task(self._reap(), name="dashboard-session-reaper")

    async def stop(self) -> None:
        """Stop the reaper and end every session."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.wait([self._reaper])
        await asyncio.gather(*(self.end(s) for s in list(self._sessions.values())))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_SECONDS)
            await self.end_expired()

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_used > self._idle or now - session.started > self._lifetime
