"""What the dashboard reads and does, on the signed-in role's own PostgreSQL connection
(asyncpg stays in this module: callers get frozen records and typed errors)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import asyncpg

CONNECT_TIMEOUT = 10.0  # seconds a sign-in may take
QUERY_TIMEOUT = 15.0  # seconds one dashboard query may take
SHOWN_CHARACTERS = 65536  # results and outputs are cut here (a result may be 64 MiB)
EXECUTIONS_SHOWN = 20
APPLICATION_NAME = "pgdurable dashboard"
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


class DashboardError(Exception):
    """Base of what the dashboard's PostgreSQL work raises."""


class SignInRefused(DashboardError):
    """PostgreSQL (or the network) refused the sign-in; the message says why."""


class QueryFailed(DashboardError):
    """PostgreSQL refused a query: its SQLSTATE and message."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ConnectionLost(DashboardError):
    """The signed-in role's connection is gone; the session has to sign in again."""


@cache
def _queries() -> dict[str, str]:
    text = (resources.files("pgdurable_proxy.dashboard") / "queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One line of the instances page."""

    instance_id: str
    label: str | None
    status: str
    owner: str | None
    execution_count: int | None
    created_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One page of instances, newest first, and the cursor of the next (older) page."""

    rows: tuple[InstanceRow, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance as its page shows it."""

    instance_id: str
    label: str | None
    status: str
    root_node: str
    owner: str
    may_act: bool  # the role is a member of the owner: df.cancel/df.signal will do it
    created_at: datetime | None
    completed_at: datetime | None
    execution_count: int | None
    output: str | None


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node of an instance's graph (df.instance_nodes), its result cut for display."""

    node_id: str
    node_type: str
    query: str | None
    result_name: str | None
    left_node: str | None
    right_node: str | None
    status: str
    inferred_status: str
    result: str | None
    result_length: int | None
    status_details: str | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One execution of an instance (df.instance_executions)."""

    execution_id: int
    status: str
    event_count: int | None
    duration_ms: int | None
    output: str | None


@dataclass(frozen=True, slots=True)
class StalledRow:
    """One wait of an instance without progress (df.instance_activity)."""

    instance_id: str
    label: str | None
    status: str
    last_progress: datetime | None
    idle_for: timedelta | None
    node_id: str | None
    node_type: str | None
    wait_kind: str | None
    waiting_for: str | None
    since: datetime | None


@dataclass(frozen=True, slots=True)
class InstanceView:
    """All an instance's page shows."""

    instance: Instance
    nodes: tuple[NodeRow, ...]
    executions: tuple[ExecutionRow, ...]
    explain: str


class RoleConnection:
    """One signed-in role's own connection: everything runs as that role, one query at a
    time (a browser may ask for several pages at once)."""

    def __init__(self, connection: asyncpg.Connection, role: str) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        self.role = role

    @classmethod
    async def open(cls, dsn: str, password: str) -> RoleConnection:
        """Sign in: PostgreSQL checks the role and password (pg_hba.conf decides how)."""
        try:
            # an explicit password, even empty: asyncpg must not fall back to
            # PGPASSWORD or a passfile of pgdurable's own
            connection = await asyncpg.connect(
                dsn,
                password=password,
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": APPLICATION_NAME},
            )
        except asyncpg.PostgresError as exc:
            raise SignInRefused(str(exc)) from None
        except (OSError, asyncpg.InterfaceError) as exc:  # TimeoutError is an OSError
            raise SignInRefused(f"cannot reach PostgreSQL: {exc}") from None
        try:
            role = await connection.fetchval(_queries()["whoami"], timeout=QUERY_TIMEOUT)
        except (asyncpg.PostgresError, OSError) as exc:
            connection.terminate()
            raise SignInRefused(str(exc)) from None
        return cls(connection, str(role))

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._connection.is_closed()

    async def close(self) -> None:
        """Close the connection (at once if it is busy)."""
        if self._lock.locked():
            self._connection.terminate()
        elif not self._connection.is_closed():
            try:
                await asyncio.wait_for(self._connection.close(), 2.0)
            except (OSError, asyncpg.InterfaceError):
                self._connection.terminate()

    async def instances(
        self, status: str | None, label: str | None, after: str | None, limit: int
    ) -> InstancePage:
        """A page of the instances the role may see, newest first."""
        rows = await self._fetch("instances_page", status, limit, label, after)
        cursor = rows[-1]["next_cursor"] if rows else None
        fields = InstanceRow.__dataclass_fields__
        return InstancePage(tuple(InstanceRow(**{k: r[k] for k in fields}) for r in rows), cursor)

    async def instance(self, instance_id: str) -> Instance | None:
        """The instance, or None when it does not exist or the role may not see it."""
        rows = await self._fetch("instance", instance_id)
        return Instance(**dict(rows[0])) if rows else None

    async def view(self, instance_id: str) -> InstanceView | None:
        """The instance with its nodes, executions and explain text; None when the role
        cannot see it (or it does not exist: the two look the same)."""
        instance = await self.instance(instance_id)
        if instance is None:
            return None
        nodes = await self.nodes(instance_id)
        executions = await self.executions(instance_id)
        return InstanceView(instance, nodes, executions, await self.explain(instance_id))

    async def nodes(self, instance_id: str) -> tuple[NodeRow, ...]:
        """The instance's nodes."""
        rows = await self._fetch("nodes", instance_id, SHOWN_CHARACTERS)
        return tuple(NodeRow(**dict(r)) for r in rows)

    async def executions(self, instance_id: str) -> tuple[ExecutionRow, ...]:
        """The instance's latest executions, newest first."""
        rows = await self._fetch("executions", instance_id, SHOWN_CHARACTERS, EXECUTIONS_SHOWN)
        return tuple(ExecutionRow(**dict(r)) for r in rows)

    async def explain(self, instance_id: str) -> str:
        """df.explain of the live instance."""
        return str((await self._fetch("explain", instance_id))[0][0])

    async def stalled(self, stalled_for: timedelta, limit: int) -> tuple[StalledRow, ...]:
        """The instances the role may see with no progress for `stalled_for`, with what
        each waits for (at most `limit` rows)."""
        rows = await self._fetch("stalled", stalled_for, limit)
        return tuple(StalledRow(**dict(r)) for r in rows)

    async def cancel(self, instance_id: str) -> str:
        """df.cancel, as the role."""
        return str((await self._fetch("cancel", instance_id))[0][0])

    async def signal(self, instance_id: str, name: str, data: str) -> str:
        """df.signal, as the role."""
        return str((await self._fetch("signal", instance_id, name, data))[0][0])

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._lock:
            try:
                rows: list[asyncpg.Record] = await self._connection.fetch(
                    _queries()[query], *args, timeout=QUERY_TIMEOUT
                )
                return rows
            except asyncpg.PostgresError as exc:
                if self._connection.is_closed():
                    raise ConnectionLost(str(exc)) from None
                raise QueryFailed(exc.sqlstate or "XX000", str(exc)) from None
            except TimeoutError:  # asyncpg cancelled the query; the connection goes on
                raise QueryFailed("57014", "the query took too long") from None
            except (OSError, asyncpg.InterfaceError) as exc:
                self._connection.terminate()
                raise ConnectionLost(str(exc)) from None
