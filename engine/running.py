"""The steps this engine runs right now, and its background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.connections.outage import Outage, connection_lost
from engine.planner.held import Planning
from engine.planner.kinds import NodeType
from engine.records import Task

log = logging.getLogger("pgdurable.engine")


@dataclass(slots=True)
class RunningStep:
    """A leaf task this engine is executing right now."""

    task: Task
    backend_pid: int | None = None  # set only while the step's SQL is executing
    request: asyncio.Future[str] | None = None  # an HTTP step's request in flight
    leased: bool = True  # False: a first step, which has no task row (no lease to renew)
    cancelled: bool = False  # this engine cancelled it (a RACE loser, a cancelled instance)


class Running:
    """The running steps by (instance, node); the held state of an instance is dropped with
    its last SQL step running here."""

    def __init__(self, planning: Planning) -> None:
        self.planning = planning
        self._steps: dict[tuple[str, str], RunningStep] = {}
        self._sql_steps: dict[str, int] = {}  # instance id -> SQL steps of it in _steps

    def track(self, running: RunningStep) -> None:
        task = running.task
        key = (task.instance_id, task.node_id)
        if task.node_type == NodeType.SQL and key not in self._steps:
            self._sql_steps[task.instance_id] = self._sql_steps.get(task.instance_id, 0) + 1
        self._steps[key] = running

    def finished(self, task: Task) -> None:
        """Forget a step that ended; the held state goes with the instance's last SQL step."""
        if self._steps.pop((task.instance_id, task.node_id), None) is None:
            return
        if task.node_type == NodeType.SQL:
            left = self._sql_steps.pop(task.instance_id, 1) - 1
            if left > 0:
                self._sql_steps[task.instance_id] = left
            else:
                self.planning.drop(task.instance_id)

    def get(self, instance_id: str, node_id: str) -> RunningStep | None:
        return self._steps.get((instance_id, node_id))

    def runs_sql(self, instance_id: str) -> bool:
        """Does this engine run SQL steps of the instance right now?"""
        return instance_id in self._sql_steps

    def all(self) -> Iterator[RunningStep]:
        return iter(list(self._steps.values()))

    def of(self, instance_id: str, nodes: set[str]) -> list[RunningStep]:
        return [r for (i, n), r in self._steps.items() if i == instance_id and n in nodes]


class Background:
    """The engine's background tasks, and how errors of its loops are logged: an outage
    once (Outage), anything else each time."""

    def __init__(self) -> None:
        self.outage = Outage()  # PostgreSQL unreachable: logged once, then the count
        self.tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        if connection_lost(exc):
            self.outage.failed(exc, "background")
        else:  # a bug: say where, once per occurrence
            log.error("event=background_task_failed error=%r", exc, exc_info=exc)

    def warn(self, exc: BaseException, where: str, message: str) -> None:
        """Log an error of the engine's loops: an outage once, anything else each time."""
        if connection_lost(exc):
            self.outage.failed(exc, where)
        else:
            log.warning(message, exc)
