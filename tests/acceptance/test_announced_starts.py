"""A relayed df.start hands its engine the new instance's first document (df._announce_first,
engine/announced.py): the first step starts without a scheduler pass, only on a notice the
engine sealed, and only on the instance as its transaction left it.

The proxy here polls every 30 s, so that a workflow finishing within seconds was not found
by a pass on the poll interval.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import database_with_role
from tests.support.metrics import read_metrics
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status

ROLE = "announced_user"
DATABASE = "announced"  # its own: this proxy installs the catalog there, not in the session's


@pytest.fixture(scope="module")
def slow_poll(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    upstream = database_with_role(cluster, DATABASE, ROLE)
    log = tmp_path_factory.mktemp("announced") / "pgdurable.log"
    proxy = ProxyProcess(upstream, extra_args=["--poll-interval", "30"], log_path=log)
    proxy.start()
    try:
        with psycopg.connect(proxy.dsn(dbname=DATABASE), autocommit=True) as conn:
            conn.execute("SELECT df.grant_usage(%s)", (ROLE,))
        # the engine's first pass, at its start, may come after the port opened: past it,
        # the next is 30 s away
        deadline = time.monotonic() + 10
        while _counter(proxy, "scheduler_passes_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield proxy
    finally:
        proxy.stop()


def _counter(proxy: ProxyProcess, name: str) -> int:
    return int(read_metrics(proxy.http_port)[name])


def test_a_relayed_start_takes_its_first_step_without_a_pass(slow_poll: ProxyProcess) -> None:
    dsn = slow_poll.dsn(ROLE, dbname=DATABASE)
    passes = _counter(slow_poll, "scheduler_passes_total")
    announced = _counter(slow_poll, "first_steps_announced_total")
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [
            str(row[0])
            for row in conn.execute(
                "SELECT df.start('SELECT 1' ~> 'SELECT 2') FROM generate_series(1, 5)"
            )
        ]
    assert {await_status(dsn, i, 10) for i in ids} == {"completed"}
    assert _counter(slow_poll, "first_steps_announced_total") - announced == 5
    assert _counter(slow_poll, "scheduler_passes_total") == passes


def test_a_start_rolled_back_or_cancelled_in_its_transaction_never_runs(
    slow_poll: ProxyProcess,
) -> None:
    """The notice reaches the engine once the transaction ended, whatever its end: the
    first step checks the instance first, and runs nothing for one that is gone or
    cancelled (its statement would draw from a sequence)."""
    dsn = slow_poll.dsn(ROLE, dbname=DATABASE)
    sequence = f"announced_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {sequence}")
    draw = f"'SELECT nextval(''{sequence}'')'"
    with psycopg.connect(dsn) as conn:
        conn.execute(f"SELECT df.start({draw})")
        conn.rollback()
        row = conn.execute(f"SELECT df.start({draw})").fetchone()
        assert row is not None
        conn.execute("SELECT df.cancel(%s)", (row[0],))
        conn.commit()
    assert await_status(dsn, str(row[0]), 10) == "cancelled"
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f"SELECT is_called FROM {sequence}").fetchone() == (False,)


def test_a_signal_sent_in_the_starting_transaction_is_not_lost(slow_poll: ProxyProcess) -> None:
    """A df.signal after the df.start in the same transaction changes the instance after
    its document was announced (the same xmin, another version of its _advance row): the
    announced first plan must not be applied without it."""
    dsn = slow_poll.dsn(ROLE, dbname=DATABASE)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT df.start(df.wait_for_signal('go') |=> 'sig' ~> 'SELECT $sig AS got')"
        ).fetchone()
        assert row is not None
        conn.execute("SELECT df.signal(%s, 'go', '{\"n\": 7}')", (row[0],))
        conn.commit()
    assert await_status(dsn, str(row[0]), 10) == "completed"


def test_a_forged_announcement_is_ignored(slow_poll: ProxyProcess) -> None:
    """Any relayed session can raise the notice's text: without the engine's seal the
    engine acts on none of it."""
    dsn = slow_poll.dsn(ROLE, dbname=DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT df.start('SELECT 1')").fetchone()
        assert row is not None
        assert await_status(dsn, str(row[0]), 10) == "completed"
    announced = _counter(slow_poll, "first_steps_announced_total")
    forged = (
        '{"id": "0a0b0c0d", "owner": "' + ROLE + '", "owner_oid": 10, "status": "pending", '
        '"nodes": [], "advance_xmin": "1(0,1)", "version": 0}'
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN RAISE NOTICE USING MESSAGE = 'pgdurable:first', DETAIL = "
            + "'"
            + "0" * 64
            + " "
            + forged.replace("'", "''")
            + "'; END $$"
        )
        assert conn.execute("SELECT 1").fetchone() == (1,)  # idle again: handed over
    assert _counter(slow_poll, "first_steps_announced_total") == announced
    assert slow_poll.log_path is not None
    assert f"event=first_notice_ignored role={ROLE}" in slow_poll.log_path.read_text()
