"""What the log says, at info, about an instance's life: started, completed, failed, compensated,
cancelled, each once the plan that says so has committed.

An instance starts at its first advance (its status leaves `pending`); it ends when a plan
sets a terminal status, or, for a cancel (df.cancel sets the status itself), when the
engine acts on it. The failure message is the instance's error text, never a step's SQL.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.planner.held import Planned
from engine.planner.kinds import CANCELLED, COMPLETED, FAILED, PENDING, Status

COMPENSATED = Status.COMPENSATED

log = logging.getLogger("pgdurable.engine")


def log_started(instance_id: str, instance: dict[str, Any]) -> None:
    """The instance's first plan committed (`instance`: the document it was planned from)."""
    log.info(
        "event=instance_started instance=%s owner=%s label=%s",
        *(instance_id, instance.get("owner"), instance.get("label")),
    )


def log_applied(instance_id: str, planned: Planned) -> None:
    """What the committed plan `planned` did to its instance, if it started or ended it."""
    was, now = planned.instance["status"], planned.plan.instance_status
    if was == PENDING:
        log_started(instance_id, planned.instance)
    if now == COMPLETED:
        log.info("event=instance_completed instance=%s", instance_id)
    elif now == COMPENSATED:
        log.info(
            "event=instance_compensated instance=%s message=%r", instance_id, planned.plan.output
        )
    elif now == FAILED:
        log.info("event=instance_failed instance=%s message=%r", instance_id, planned.plan.output)
    elif was == CANCELLED:
        log.info("event=instance_cancelled instance=%s", instance_id)
