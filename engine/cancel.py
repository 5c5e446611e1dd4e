"""Cancelling the SQL or HTTP a step still runs: a RACE loser, a cancelled instance, a step
whose lease another engine took over."""

from __future__ import annotations

import logging

import asyncpg

from engine.connections.pool import StepConnections
from engine.errors import StepFailed
from engine.running import Running, RunningStep
from engine.store import cancel_backend

log = logging.getLogger("pgdurable.engine")


class Canceller:
    """Cancels running steps, through a step connection of the step's own login role."""

    def __init__(self, running: Running, steps: StepConnections) -> None:
        self.running = running
        self.steps = steps

    async def cancel_steps(self, instance_id: str, nodes: set[str]) -> None:
        """Cancel the SQL or HTTP still running for abandoned nodes (a RACE loser, a cancel)."""
        for running in self.running.of(instance_id, nodes):
            await self.cancel(running)

    async def cancel_lost(self, lost_tokens: set[str]) -> None:
        """Steps whose lease could not be renewed (another engine has the task, or it was
        abandoned) are cancelled here."""
        for running in self.running.all():
            if running.task.token in lost_tokens:
                await self.cancel(running)

    async def cancel(self, running: RunningStep) -> None:
        running.cancelled = True
        if running.request is not None:
            running.request.cancel()
        if running.backend_pid is None:
            return
        task = running.task
        log.info(
            "event=cancel_step instance=%s node=%s pid=%s",
            task.instance_id,
            task.node_id,
            running.backend_pid,
        )
        try:  # a login role may always cancel its own backends
            step = await self.steps.acquire(task.owner, task.database)
            try:
                await cancel_backend(step.conn, running.backend_pid)
            finally:
                await self.steps.release(task.owner, task.database, step)
        except (StepFailed, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("event=cancel_failed error=%r", exc)
