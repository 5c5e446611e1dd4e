"""Runner roles: how the engine logs in for a workflow's owner on password-only clusters.

With a secret configured, the engine logs in as the owner's runner role (created by
df.grant_usage, engine/sql/catalog/grants.sql) with a password derived from the secret,
and asks for `role = <owner>` at startup. The password itself is never stored:
PostgreSQL keeps only the SCRAM verifier, which the engine computes and sets when a login
fails with it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Callable

import asyncpg

from engine.errors import NoRunner
from engine.queries import q

log = logging.getLogger("pgdurable.runners")
SCRAM_ITERATIONS = 4096


def derive_password(secret: bytes, runner: str) -> str:
    """The runner's password: HMAC-SHA-256 of its name under pgdurable's secret."""
    return hmac.new(secret, b"pgdurable-runner:" + runner.encode(), hashlib.sha256).hexdigest()


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677)."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class Runners:
    """Looks up runner roles and (re)sets their passwords through the admin pool."""

    def __init__(self, secret: bytes, pool: Callable[[], asyncpg.Pool]) -> None:
        self._secret = secret
        self._pool = pool
        self._names: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def resetting(self, runner: str) -> asyncio.Lock:
        """Held while a runner's password is checked and reset (one at a time per runner)."""
        return self._locks.setdefault(runner, asyncio.Lock())

    async def login_for(self, owner: str) -> tuple[str, str]:
        """(runner role, password) to log in for `owner`; NoRunner when there is none."""
        runner = self._names.get(owner)
        if runner is None:
            runner = await self._pool().fetchval(q("runner_of"), owner)
            if runner is None:
                raise NoRunner(
                    f"role \"{owner}\" has no runner role: run SELECT df.grant_usage('{owner}') "
                    "through pgdurable (on password-only clusters workflows run through it)"
                )
            self._names[owner] = runner
        return runner, derive_password(self._secret, runner)

    async def reset_password(self, runner: str) -> None:
        """Store the verifier of the derived password (first login, or a new secret).

        Another pgdurable process may be doing the same ("tuple concurrently updated"):
        its verifier is as good as ours when the secrets agree, so that is not an error.
        """
        verifier = scram_verifier(derive_password(self._secret, runner))
        try:
            await self._pool().execute(q("set_runner_password"), runner, verifier)
        except asyncpg.InternalServerError as exc:
            log.info("event=runner_password_race runner=%s error=%s", runner, exc)

    def forget(self, owner: str) -> None:
        """Drop a cached runner name (df.revoke_usage may have removed it)."""
        self._names.pop(owner, None)
