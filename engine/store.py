"""Every call the engine's core makes to the catalog through its admin pool: the named
statements of engine/sql/queries.sql and step_queries.sql (engine/queries.py), returning
the typed records of engine/records.py.

(The statements a step's own connection runs, prepared there, are the SQL executor's:
engine/executors/sql.py and engine/connections/step_connection.py.)
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg

from engine.errors import StepFailed
from engine.queries import q
from engine.records import (
    AdvanceDue,
    Claimed,
    HeldCheck,
    HttpPrivilege,
    NewInstance,
    NextTimer,
    Owner,
    PollRow,
    Pruned,
    Task,
)
from engine.settings import ServerValue
from engine.signals import SignalRequest

ADVANCES_PER_POLL = 256


class Store:
    """The catalog as the engine `owner_id` sees it."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        owner_id: str,
        lease_seconds: float,
        catalog_database: str,
    ) -> None:
        self.pool = pool
        self.key = uuid.UUID(owner_id)
        self.lease_seconds = lease_seconds
        self.catalog_database = catalog_database

    # -- boot -------------------------------------------------------------------------------
    async def publish(
        self, conn: asyncpg.Connection, settings: dict[str, str], version: int
    ) -> None:
        """Publish the settings df.* reads and this engine's catalog version (the engine
        has initialised the catalog: _duroxide._worker_ready, as pg_durable's worker)."""
        for name, value in settings.items():
            await conn.execute(q("publish_setting"), name, value)
        await conn.execute(q("worker_ready"), version)

    @staticmethod
    async def server_values(
        conn: asyncpg.Connection, names: tuple[str, ...]
    ) -> tuple[ServerValue, ...]:
        """The `pg_durable.*` values the server's configuration gives this connection: the
        named ones, and any other a configuration file holds (when it may read the files)."""
        rows = await conn.fetch(q("server_values"), list(names))
        origins: dict[str, str] = {}
        if await conn.fetchval(q("may_read_config_files")):
            for r in await conn.fetch(q("config_file_values")):
                origins[r["name"]] = f"{r['sourcefile']} line {r['sourceline']}"
                if r["name"] not in names:
                    rows.append(r)
        return tuple(ServerValue(r["name"], r["value"], origins.get(r["name"])) for r in rows)

    @staticmethod
    async def in_flight(conn: asyncpg.Connection) -> tuple[int, int]:
        """The instances not finished, and the steps leased to an engine."""
        instances, leased = await conn.fetchrow(q("in_flight")) or (0, 0)
        return int(instances), int(leased)

    # -- the scheduler ------------------------------------------------------------------------
    async def poll(self, claims: int, first_steps: list[str], documents: int) -> list[PollRow]:
        """One scheduler pass (df._poll), its rows in order."""
        rows = await self.pool().fetch(
            q("poll"),
            self.key,
            self.lease_seconds,
            ADVANCES_PER_POLL,
            claims,
            first_steps,
            documents,
        )
        return [self._poll_row(r) for r in rows]

    def _poll_row(self, r: asyncpg.Record) -> PollRow:
        kind = r["kind"]
        if kind == "new":
            owner = None if r["owner_oid"] is None else _owner(r)
            return NewInstance(r["instance_id"], owner, r["payload"])
        if kind == "advance":
            return AdvanceDue(r["instance_id"])
        if kind == "task":
            return self._claimed(r)
        due = r["due"]
        return NextTimer(None if due is None else float(due))

    def _claimed(self, r: asyncpg.Record) -> Claimed:
        task = Task(
            r["instance_id"],
            r["node_id"],
            r["node_type"],
            r["payload"],
            str(r["lease_token"]),
            _owner(r),
            r["database"] or self.catalog_database,
        )
        return Claimed(task, r["attempts"])

    async def renew_leases(self, tokens: list[uuid.UUID]) -> set[str]:
        """Renew these leases; the tokens still leased to this engine."""
        kept = await self.pool().fetch(q("renew_leases"), self.key, self.lease_seconds, tokens)
        return {str(r["lease_token"]) for r in kept}

    async def advances_due(self, instance_ids: list[str]) -> list[str]:
        """Of these instances, those with an advance due now."""
        return [r[0] for r in await self.pool().fetch(q("advances_due"), instance_ids)]

    # -- advancing ----------------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Advancing]:
        """A transaction on a pooled connection that loads and applies plans."""
        async with self.pool().acquire() as conn, conn.transaction():
            yield Advancing(conn)

    async def held_state(self, instance_id: str) -> HeldCheck | None:
        """The stored state of an instance, and whether a change waits (one snapshot)."""
        row = await self.pool().fetchrow(q("held_state_check"), instance_id)
        return None if row is None else HeldCheck(row["state"], bool(row["pending"]))

    async def promote_first(self, instance_id: str, advance_xmin: str, plan: str) -> bool:
        """Commit a first plan with its step's task row (a first step that runs long)."""
        return bool(await self.pool().fetchval(q("promote_first"), instance_id, advance_xmin, plan))

    async def http_privilege(self, owner: Owner, signature: str) -> HttpPrivilege | None:
        """May `owner` run HTTP steps now (EXECUTE on builder `signature`), and is it a
        superuser? None: the role is gone."""
        row = await self.pool().fetchrow(q("http_privilege"), owner.oid, signature)
        return None if row is None else HttpPrivilege(bool(row["allowed"]), row["rolsuper"])

    # -- retention ------------------------------------------------------------------------------
    async def prune_finished(self, older_than: timedelta, keep: int, batch: int) -> Pruned | None:
        """Delete one batch of finished instances (df._prune_finished), in a transaction of
        its own; None when another pgdurable process is pruning."""
        row = await self.pool().fetchrow(q("prune_finished"), older_than, keep, batch)
        return None if row is None else Pruned(row["by_age"], row["by_cap"])

    # -- new-transaction starts ---------------------------------------------------------------
    async def new_start_ack(self, request: uuid.UUID) -> None:
        await self.pool().execute(q("new_start_ack"), request)

    async def new_start_answer(
        self, request: uuid.UUID, instance_id: str | None, error: str | None, sqlstate: str | None
    ) -> None:
        await self.pool().execute(q("new_start_answer"), request, instance_id, error, sqlstate)

    async def may_act_as(self, login_role: str, role: str) -> bool:
        return bool(await self.pool().fetchval(q("may_act_as"), login_role, role))

    # -- signals sent through pgdurable -----------------------------------------------------
    async def record_signal(self, login_role: str, request: SignalRequest) -> bool:
        """Store the signal now if the session's login role may send it; False: refused."""
        stored = await self.pool().fetchval(
            q("record_signal"),
            login_role,
            request.role,
            request.request,
            request.instance_id,
            request.signal_name,
            request.data,
        )
        return bool(stored)

    # -- tasks --------------------------------------------------------------------------------
    async def complete_step(self, task: Task, raw: str, delivery: str) -> None:
        await self.pool().execute(
            q("complete_step"), task.instance_id, task.node_id, uuid.UUID(task.token), raw, delivery
        )

    async def fail_or_retry(self, task: Task, failure: StepFailed) -> str | None:
        """Record a failed attempt (df._fail_or_retry): 'retry', 'failed' or 'final'; None
        when the step's lease was lost meanwhile."""
        ids = (task.instance_id, task.node_id, uuid.UUID(task.token))
        facts = (failure.retryable, failure.retry_after, failure.result is not None)
        decided = await self.pool().fetchval(q("fail_or_retry_step"), *ids, str(failure), *facts)
        return None if decided is None else str(decided)

    async def task_still_leased(self, task: Task) -> bool:
        leased = await self.pool().fetchval(
            q("task_still_leased"), task.instance_id, task.node_id, uuid.UUID(task.token)
        )
        return bool(leased)

    async def claim_own_leases(self, instance_id: str, running: list[uuid.UUID]) -> list[Claimed]:
        """The instance's tasks leased to this engine that it does not run, leased afresh."""
        rows = await self.pool().fetch(
            q("claim_own_leases"), instance_id, self.key, running, self.lease_seconds
        )
        return [self._claimed(r) for r in rows]


def _owner(r: asyncpg.Record) -> Owner:
    """The owner a poll row names (its OID is there even when its role is gone)."""
    return Owner(int(r["owner_oid"] or 0), r["owner"] or "")


class Advancing:
    """Loads and applies plans in one transaction (Store.transaction)."""

    def __init__(self, conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        self.conn = conn

    async def load(self, instance_id: str) -> str | None:
        """The instance's state to plan from (df._load_for_advance); None: nothing due, or
        the instance is locked by another transaction."""
        text: str | None = await self.conn.fetchval(q("load_for_advance"), instance_id)
        return text

    async def apply(self, instance_id: str, plan: str) -> None:
        await self.conn.execute(q("apply_plan"), instance_id, plan)

    async def load_many(self, instance_ids: list[str]) -> list[tuple[str, str | None]]:
        """load() for several instances, in the order given."""
        return [(r["id"], r["state"]) for r in await self.conn.fetch(q("load_many"), instance_ids)]

    async def apply_many(self, instance_ids: list[str], plans: list[str]) -> None:
        await self.conn.execute(q("apply_many"), instance_ids, plans)


async def cancel_backend(conn: asyncpg.Connection, pid: int) -> None:
    """Cancel backend `pid` from `conn`, a step connection of its login role (a login role
    may always cancel its own backends)."""
    async with conn.transaction():  # as the login role: a runner's own backend
        await conn.execute(q("as_login_role"))
        await conn.execute(q("cancel_backend"), pid)
