"""Typed engine errors: one base, EngineError, each class with the SQLSTATE it carries.

The errors of a step (StepFailed and the ones it wraps) become the node's error text; the
SQLSTATE says what kind of failure it was. The errors of one module only (the planner's
SubstitutionError and HttpConfigError, the HTTP guard's Blocked and AllowListError) are
defined there, on this base.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of the engine's errors (internal: XX000)."""

    sqlstate = "XX000"


class MigrationError(EngineError):
    """The catalog could not be installed or upgraded."""

    sqlstate = "55000"  # object_not_in_prerequisite_state


# SQLSTATE classes of errors another attempt cannot escape (pg_durable's proposed failure
# policy): syntax or access rule violation, integrity constraint violation, invalid
# authorization, invalid catalog name, invalid schema name.
PERMANENT_SQL_CLASSES = frozenset({"42", "23", "28", "3D", "3F"})


def retryable_sqlstate(sqlstate: str | None) -> bool:
    """May another attempt of a step whose SQL failed with `sqlstate` succeed?"""
    return sqlstate is not None and sqlstate[:2] not in PERMANENT_SQL_CLASSES


class StepFailed(EngineError):
    """The step failed; the message is what pg_durable users see on the node. `sqlstate`
    is the step's SQL error's when there was one. `retryable`: another attempt may succeed
    (a failure policy with attempts left then retries the step), after at least
    `retry_after` seconds when the server said so (HTTP Retry-After); `result`: the
    response a step that is not retried completes with instead (an HTTP 429)."""

    def __init__(
        self,
        message: str,
        sqlstate: str | None = None,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        result: str | None = None,
    ) -> None:
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.retryable = retryable
        self.retry_after = retry_after
        self.result = result


def sql_step_failed(message: str, sqlstate: str | None) -> StepFailed:
    """A step failed with an error of its SQL (retryable as its SQLSTATE says)."""
    return StepFailed(message, sqlstate, retryable=retryable_sqlstate(sqlstate))


class SlotWaitTimedOut(StepFailed):
    """An SQL step waited longer than --execution-acquire-timeout for a step slot
    (pg_durable's text)."""

    def __init__(self, max_user_connections: int, timeout: float) -> None:
        super().__init__(
            f"pg_durable: connection limit reached (max_user_connections={max_user_connections})."
            f" Timed out after {timeout:g}s waiting for an available execution slot.",
            "53300",  # too_many_connections
            retryable=True,
        )


class StepNotRun(EngineError, ConnectionError):
    """A step could not reach PostgreSQL (`started` false), or lost its connection before
    its transaction committed (`started` true): it did not run (or was rolled back) and
    must run again. (An OSError too, as the connection errors it stands for.)"""

    sqlstate = "08006"  # connection_failure

    def __init__(self, message: str, started: bool = False) -> None:
        super().__init__(message)
        self.started = started


class NoRunner(EngineError):
    """The owner has no runner role yet: df.grant_usage was not called with a secret set."""

    sqlstate = "42704"  # undefined_object


class ResultTooLarge(EngineError):
    """A step's result document would be larger than --max-result-bytes."""

    sqlstate = "54000"  # program_limit_exceeded

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"SQL step result is larger than the limit of {limit} bytes (--max-result-bytes)"
        )


class UnsupportedColumn(EngineError):
    """A result column has a type pg_durable cannot represent."""

    sqlstate = "0A000"  # feature_not_supported


class NewStartFailed(EngineError):
    """The text and SQLSTATE the caller's df.start raises."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class OwnerRefused(EngineError):
    """The instance's owner may not run a step (pg_durable's texts for a graph load): its
    role is gone, or is a superuser while superuser instances are off."""

    sqlstate = "42501"  # insufficient_privilege

    @classmethod
    def gone(cls, instance_id: str) -> OwnerRefused:
        return cls(f"Instance {instance_id}: submitted_by role no longer exists in pg_roles")

    @classmethod
    def superuser(cls, instance_id: str, role: str) -> OwnerRefused:
        return cls(
            f'pg_durable blocked instance {instance_id}: submitted_by role "{role}" is a '
            "superuser, but pg_durable.enable_superuser_instances is off"
        )
