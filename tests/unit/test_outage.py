"""Which errors mean PostgreSQL went away (the step runs again) and which fail the step."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from engine.connections.outage import Outage, connection_lost
from engine.errors import StepNotRun


def _error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("x")


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("closed in the middle of operation"),
        _error(asyncpg.AdminShutdownError),  # 57P01
        _error(asyncpg.CrashShutdownError),  # 57P02
        _error(asyncpg.CannotConnectNowError),  # 57P03 starting up
        _error(asyncpg.ConnectionFailureError),  # 08006
        _error(asyncpg.ClientCannotConnectError),  # 08001
        StepNotRun("Failed to connect"),
    ],
)
def test_connection_errors_mean_not_run(exc: BaseException) -> None:
    assert connection_lost(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _error(asyncpg.UniqueViolationError),
        _error(asyncpg.QueryCanceledError),  # 57014: a statement_timeout or a RACE's cancel
        _error(asyncpg.SerializationError),  # 40001: the lease went elsewhere
        _error(asyncpg.InsufficientPrivilegeError),
        _error(asyncpg.InvalidCatalogNameError),  # the database does not exist
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ValueError("x"),
    ],
)
def test_sql_errors_still_fail_the_step(exc: BaseException) -> None:
    assert not connection_lost(exc)


def test_an_interface_error_after_a_lost_connection_is_an_outage() -> None:
    try:
        try:
            raise asyncpg.ConnectionDoesNotExistError("closed")
        except asyncpg.ConnectionDoesNotExistError:
            raise asyncpg.InterfaceError("the underlying connection is closed") from None
    except asyncpg.InterfaceError as exc:
        assert connection_lost(exc)


def test_an_outage_is_logged_once_per_kind_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage()
    with caplog.at_level(logging.INFO, logger="pgdurable.engine"):
        for _ in range(500):
            outage.failed(ConnectionRefusedError(111, "refused"), "step")
            outage.failed(_error(asyncpg.CannotConnectNowError), "scheduler")
        outage.answered()
        outage.answered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("event=upstream_unavailable kind=ConnectionRefusedError")
    assert lines[1].startswith("event=upstream_unavailable kind=CannotConnectNowError/57P03")
    assert lines[2].startswith("event=upstream_back failures=1000 ")
    assert all(r.exc_info is None for r in caplog.records)
