"""Step connections: idle ones per (role, database), capped by the step slots, logged in as
the step's owner (or as its runner role, with the owner as a startup option)."""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from engine.connections.outage import connection_lost
from engine.connections.runners import Runners
from engine.connections.slots import StepSlots
from engine.connections.step_connection import StepConnection
from engine.errors import NoRunner, StepFailed, StepNotRun
from engine.queries import q
from engine.settings import EngineSettings

STEP_SESSION_SETTINGS = {
    "df.in_workflow": "true",
    "application_name": "pg_durable:worker:workflow-sql",
}


class StepConnections:
    """Idle connections per (role, database), capped by a global semaphore."""

    def __init__(self, settings: EngineSettings, runners: Runners | None = None) -> None:
        self.settings = settings
        self.runners = runners
        self.slots = StepSlots(settings.max_user_connections)
        self._idle: dict[tuple[str, str], list[StepConnection]] = defaultdict(list)
        # connections (with their slots) passed from a step to the next (StepOutcome.began_next)
        self.carried: set[StepConnection] = set()

    async def acquire(self, role: str, database: str) -> StepConnection:
        idle = self._idle[(role, database)]
        while idle:
            step = idle.pop()
            if not step.conn.is_closed():
                return step
        conn = await self.connect(role, database, STEP_SESSION_SETTINGS)
        step = StepConnection(conn, self.settings.split_statements)
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

    async def release(self, role: str, database: str, step: StepConnection) -> None:
        conn = step.conn
        try:
            if step.begun:  # carried to a next step that did not run: nothing done yet
                step.begun = step.reset_on_commit = False
                await conn.execute("ROLLBACK")
            elif step.reset_on_commit:
                step.reset_on_commit = False
            else:
                await conn.execute(q("reset_step_session"))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()
            return
        idle = self._idle[(role, database)]
        if len(idle) < self.settings.max_user_connections:
            idle.append(step)
        else:
            await conn.close()

    async def close(self) -> None:
        for step in [*self.carried, *(c for steps in self._idle.values() for c in steps)]:
            step.conn.terminate()
        self.carried.clear()
        self._idle.clear()


def _refused_login(exc: StepFailed) -> bool:
    """A first login, or one after the secret changed (28P01 is a subclass of 28000)."""
    return isinstance(exc.__cause__, asyncpg.InvalidAuthorizationSpecificationError)
