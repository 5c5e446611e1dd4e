"""Step connections: idle ones per (owner, database), capped by the step slots, logged in as
the step's owner (or as its runner role, with the owner as a startup option).

An owner is its role's OID, not its name: a role dropped and created again under the same
name gets connections of its own. A connection idle for --step-idle-timeout is closed, so
that nothing holds a database its workflows no longer use (DROP DATABASE waits for none).
"""

from __future__ import annotations

import asyncio

import asyncpg

from engine.connections.outage import connection_lost
from engine.connections.runners import Runners
from engine.connections.slots import StepSlots
from engine.connections.step_connection import StepConnection
from engine.errors import NoRunner, StepFailed, StepNotRun
from engine.queries import q
from engine.records import Owner
from engine.settings import EngineSettings

STEP_SESSION_SETTINGS = {
    "df.in_workflow": "true",
    "application_name": "pg_durable:worker:workflow-sql",
}
CLOSE_TIMEOUT = 5.0  # seconds an idle connection's graceful close may take
PoolKey = tuple[int, str]  # (owner's role OID, database)


class StepConnections:
    """Idle connections per (owner, database), capped by a global semaphore."""

    def __init__(self, settings: EngineSettings, runners: Runners | None = None) -> None:
        self.settings = settings
        self.runners = runners
        self.slots = StepSlots(settings.max_user_connections)
        self._idle: dict[PoolKey, list[StepConnection]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # connections (with their slots) passed from a step to the next (StepOutcome.began_next)
        self.carried: set[StepConnection] = set()

    async def acquire(self, owner: Owner, database: str) -> StepConnection:
        """An idle connection of `owner` in `database`, else a new one."""
        idle = self._idle.get((owner.oid, database), [])
        while idle:
            step = idle.pop()
            self._unpark(step)
            if not step.conn.is_closed():
                return step
        # df._step_guard reads the owner's OID here (RESET ALL restores it before each step)
        as_owner = {**STEP_SESSION_SETTINGS, "df.step_owner": str(owner.oid)}
        conn = await self.connect(owner.name, database, as_owner)
        step = StepConnection(
            conn, self.settings.enable_superuser_instances, self.settings.split_statements
        )
        step.limit_results(self.settings.max_result_bytes)
        if database == self.settings.catalog_database:
            try:
                await step.prepare_bookkeeping()
            except BaseException:
                step.conn.terminate()
                raise
        return step

    async def connect(
        self, role: str, database: str, server_settings: dict[str, str]
    ) -> asyncpg.Connection:
        """A new connection with exactly `role`'s privileges (outside the pool and its cap).

        Without a secret the engine logs in as the role itself (trust/peer, as pg_durable).
        With one it logs in as the role's runner with `role` as a startup option.
        """
        runners = self.runners
        if runners is None or role == self.settings.admin_user:
            return await self._login(role, None, database, server_settings, role)
        try:
            runner, password = await runners.login_for(role)
        except NoRunner as exc:
            raise StepFailed(str(exc)) from exc
        as_owner = {**server_settings, "role": role}
        try:
            return await self._login(runner, password, database, as_owner, role)
        except StepFailed as exc:
            if not _refused_login(exc):
                raise
        async with runners.resetting(runner):  # one reset per runner, not one per step
            try:  # another step may have reset the password while we waited
                return await self._login(runner, password, database, as_owner, role)
            except StepFailed as exc:
                if not _refused_login(exc):
                    raise
            try:
                await runners.reset_password(runner)
            except asyncpg.PostgresError as exc:  # e.g. df.revoke_usage dropped the runner
                runners.forget(role)
                raise StepFailed(
                    f"Failed to connect to database '{database}' as '{role}'. Error: {exc}"
                ) from exc
        return await self._login(runner, password, database, as_owner, role)

    async def _login(
        self,
        user: str,
        password: str | None,
        database: str,
        server_settings: dict[str, str],
        role: str,
    ) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                self.settings.step_dsn(user, password, database),
                timeout=30,
                server_settings=server_settings,
            )
        except TimeoutError as exc:  # the step never started: it waits and runs again
            raise StepNotRun(
                f"Connection to database '{database}' as '{role}' timed out after 30s"
            ) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            text = f"Failed to connect to database '{database}' as '{role}'. Error: {exc}"
            if connection_lost(exc):  # refused, the server starting up or shutting down
                raise StepNotRun(text) from exc
            raise StepFailed(text) from exc

    async def release(self, owner: Owner, database: str, step: StepConnection) -> None:
        """Reset a connection and pool it (closed after --step-idle-timeout unused)."""
        conn = step.conn
        try:
            if step.ahead is not None:  # a next step's BEGIN and statement, sent unasked
                if not await step.settle_ahead():
                    return  # the statement runs: the connection was closed
                step.begun = True  # the statement failed unrun: roll back as below
            if step.begun:  # carried to a next step that did not run: nothing done yet
                step.begun = step.reset_on_commit = False
                step.refusal = None
                await conn.execute("ROLLBACK")
            elif step.reset_on_commit:
                step.reset_on_commit = False
            else:
                await conn.execute(q("reset_step_session"))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()
            return
        key = (owner.oid, database)
        idle = self._idle.setdefault(key, [])
        if len(idle) < self.settings.max_user_connections:
            idle.append(step)
            loop = asyncio.get_running_loop()
            step.idle_timer = loop.call_later(
                self.settings.step_idle_timeout, self._expire, key, step
            )
        else:
            await conn.close()

    def _unpark(self, step: StepConnection) -> None:
        if step.idle_timer is not None:
            step.idle_timer.cancel()
            step.idle_timer = None

    def _expire(self, key: PoolKey, step: StepConnection) -> None:
        """An idle connection's time is up: out of the pool, closed in the background."""
        step.idle_timer = None
        idle = self._idle.get(key)
        if idle is None or step not in idle:
            return
        idle.remove(step)
        if not idle:
            del self._idle[key]  # a dropped role's key goes with its last connection
        closing = asyncio.ensure_future(step.conn.close(timeout=CLOSE_TIMEOUT))
        self._closing.add(closing)
        closing.add_done_callback(self._closed)

    def _closed(self, closing: asyncio.Task[None]) -> None:
        self._closing.discard(closing)
        if not closing.cancelled():
            closing.exception()  # a connection already lost had nothing left to close

    async def close(self) -> None:
        idle = [c for steps in self._idle.values() for c in steps]
        for step in [*self.carried, *idle]:
            self._unpark(step)
            step.conn.terminate()
        for closing in list(self._closing):
            closing.cancel()
        self.carried.clear()
        self._idle.clear()


def _refused_login(exc: StepFailed) -> bool:
    """A first login, or one after the secret changed (28P01 is a subclass of 28000)."""
    return isinstance(exc.__cause__, asyncpg.InvalidAuthorizationSpecificationError)
