"""df.start(..., transaction_mode => 'new'): the instance starts on a session of its own.

The caller's backend asks with a NOTICE (catalog start.sql) that the relay hands over here, and
polls df._new_starts for the answer. The new session logs in as the requested role, exactly
like a step's, after checking that the requesting session's login role may act as that role
(a forged NOTICE gains nothing that SET ROLE would not give).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from engine.errors import NewStartFailed
from engine.queries import q
from engine.store import Store

log = logging.getLogger("pgdurable.new_transaction")
NOTICE_MARKER = "pgdurable:new-transaction-start"
STATEMENT_TIMEOUT_MS = 30_000
SESSION_SETTINGS = {
    "application_name": "pg_durable:backend:new-transaction",
    "df.in_workflow": "false",
    "lock_timeout": str(STATEMENT_TIMEOUT_MS),
    "statement_timeout": str(STATEMENT_TIMEOUT_MS),
}

# (role, database, server settings) -> a connection logged in as that role
Connector = Callable[[str, str, dict[str, str]], Awaitable[asyncpg.Connection]]


@dataclass(frozen=True, slots=True)
class NewStartRequest:
    """What the caller's df.start asked for (the NOTICE's detail)."""

    request: uuid.UUID
    role: str
    fut: str
    label: str | None
    database: str | None
    failure_policy: str | None  # df.start's failure policy (JSON text), None: the default

    @classmethod
    def from_detail(cls, detail: str) -> NewStartRequest:
        """Parse the NOTICE detail; ValueError/KeyError/TypeError when it is not ours."""
        fields = json.loads(detail)
        return cls(
            uuid.UUID(fields["request"]),
            str(fields["role"]),
            str(fields["fut"]),
            fields.get("label"),
            fields.get("database"),
            None if fields.get("failure_policy") is None else json.dumps(fields["failure_policy"]),
        )


class NewTransactionStarts:
    """Runs the requested starts, at most `slots` at once (pg_durable's launch limit)."""

    def __init__(
        self,
        store: Store,
        connect: Connector,
        database: str,
        slots: int,
        slot_timeout: float,
    ) -> None:
        self._store = store
        self._connect = connect
        self._database = database
        self._slots = asyncio.Semaphore(slots)
        self._slot_count = slots
        self._slot_timeout = slot_timeout

    async def handle(self, login_role: str, request: NewStartRequest) -> bool:
        """Acknowledge, start, answer. True when an instance was started."""
        store = self._store
        await store.new_start_ack(request.request)
        try:
            instance_id = await self._start(login_role, request)
        except NewStartFailed as exc:
            log.info("event=new_start_failed request=%s error=%s", request.request, exc)
            await store.new_start_answer(request.request, None, str(exc), exc.sqlstate)
            return False
        await store.new_start_answer(request.request, instance_id, None, None)
        return True

    async def _start(self, login_role: str, request: NewStartRequest) -> str:
        if not await self._store.may_act_as(login_role, request.role):
            raise NewStartFailed(
                f'df.start() on new transaction failed: session role "{login_role}" may not '
                f'start instances as "{request.role}"',
                "42501",
            )
        try:
            await asyncio.wait_for(self._slots.acquire(), self._slot_timeout)
        except TimeoutError:
            raise NewStartFailed(
                "pg_durable: transaction_mode => 'new' launch limit reached "
                f"(max_new_transaction_starts={self._slot_count}). Timed out after "
                f"{self._slot_timeout:g}s waiting for a launch slot before opening the "
                "loopback session.",
                "53300",
            ) from None
        try:
            return await self._start_in_own_session(request)
        finally:
            self._slots.release()

    async def _start_in_own_session(self, request: NewStartRequest) -> str:
        try:
            conn = await self._connect(request.role, self._database, SESSION_SETTINGS)
        except Exception as exc:  # the connector's StepFailed, OSError, auth errors
            raise NewStartFailed(f"df.start() on new transaction failed: {exc}", "08001") from exc
        try:
            instance_id = await conn.fetchval(
                q("start_in_this_transaction"),
                *(request.fut, request.label, request.database, request.failure_policy),
            )
        except asyncpg.PostgresError as exc:
            raise _launch_error(exc) from exc
        finally:
            await conn.close()
        return str(instance_id)


def _launch_error(exc: asyncpg.PostgresError) -> NewStartFailed:
    state = exc.sqlstate or "XX000"
    for code, what in (("55P03", "lock_timeout"), ("57014", "statement_timeout")):
        if state == code:
            return NewStartFailed(
                f"pg_durable: transaction_mode => 'new' launch hit {what} after "
                f"{STATEMENT_TIMEOUT_MS}ms: {exc}",
                state,
            )
    return NewStartFailed(f"df.start() on new transaction failed: {exc}", state)
