"""Failure policies: df.start(..., max_attempts, max_backoff, on_failure) retries a step
whose error another attempt may escape, after a capped, jittered, durable backoff; a failed
attempt's SQL rolls back, so each step's effect happens exactly once.

Attempts are counted and timed on the server: the step calls retry_flaky(), which takes a
number from a sequence (not transactional: a rolled-back attempt keeps it) and stores the
server clock of that attempt in a sequence of its own (setval), then fails while the number
is at most `failures`."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import database_with_role
from tests.support.http_server import ServerThread
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status

FLAKY = """
CREATE OR REPLACE FUNCTION retry_flaky(counter text, failures integer, code text)
RETURNS integer LANGUAGE plpgsql AS $f$
DECLARE
    n integer := nextval(counter);
BEGIN
    PERFORM setval(format('%s_t%s', counter, n),
                   (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    IF n <= failures THEN
        IF code = '42601' THEN
            EXECUTE 'SELEC 1';
        END IF;
        RAISE EXCEPTION 'attempt % failed', n USING ERRCODE = code;
    END IF;
    RETURN n;
END
$f$;
CREATE TABLE IF NOT EXISTS retry_effects (instance_id text, tag text, UNIQUE (instance_id, tag));
"""


@dataclass(frozen=True)
class Counter:
    """A sequence counting a step's attempts, and one per attempt holding its time."""

    name: str
    dsn: str

    def step(self, failures: int, code: str = "40001", tag: str = "effect") -> str:
        """An SQL step whose INSERT commits only with an attempt that succeeds."""
        return (
            f"INSERT INTO retry_effects VALUES ('{{sys_instance_id}}', '{tag}'); "
            f"SELECT retry_flaky('{self.name}', {failures}, '{code}')"
        )

    def attempts(self) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(f"SELECT last_value, is_called FROM {self.name}").fetchone()
        assert row is not None
        return int(row[0]) if row[1] else 0

    def times(self) -> list[float]:
        """The server clock (epoch seconds) of each attempt."""
        stamps = []
        with psycopg.connect(self.dsn) as conn:
            for n in range(1, self.attempts() + 1):
                row = conn.execute(f"SELECT last_value FROM {self.name}_t{n}").fetchone()
                assert row is not None
                stamps.append(int(row[0]) / 1e6)
        return stamps


def make_counter(dsn: str) -> Counter:
    name = f"retry_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FLAKY)
        conn.execute(f"CREATE SEQUENCE {name}")
        for n in range(1, 6):
            conn.execute(f"CREATE SEQUENCE {name}_t{n}")
    return Counter(name, dsn)


def start(dsn: str, graph: str, *params: object, policy: str = "") -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT df.start({graph}{policy})", params).fetchone()
    assert row is not None
    return str(row[0])


def effects(dsn: str, instance: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tag FROM retry_effects WHERE instance_id = %s ORDER BY tag", (instance,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def node_details(dsn: str, instance: str) -> dict[str, object]:
    """The SQL node's status_details, with next_attempt_at as epoch seconds."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT status_details, extract(epoch FROM"
            " (status_details ->> 'next_attempt_at')::timestamptz)::float8"
            " FROM df.nodes WHERE instance_id = %s AND node_type = 'SQL'",
            (instance,),
        ).fetchone()
    assert row is not None
    details = dict(row[0] or {})
    details["next_attempt_epoch"] = row[1]
    return details


@pytest.mark.parametrize(("max_attempts", "expected"), [(3, "completed"), (2, "failed")])
def test_a_transient_error_is_retried_up_to_max_attempts(
    wf_dsn: str, max_attempts: int, expected: str
) -> None:
    counter = make_counter(wf_dsn)
    policy = ", max_attempts => %s, max_backoff => '0.3s'"
    graph = "%s ~> 'INSERT INTO retry_effects VALUES (''{sys_instance_id}'', ''after'')'"
    instance = start(wf_dsn, graph, counter.step(failures=2), max_attempts, policy=policy)
    assert await_status(wf_dsn, instance) == expected
    assert counter.attempts() == max_attempts
    # every INSERT of the successful attempt exactly once, none of a failed one
    assert effects(wf_dsn, instance) == (["after", "effect"] if expected == "completed" else [])
    times = counter.times()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # equal jitter: between half the capped backoff and the backoff (plus the engine's pass)
    assert all(0.15 <= gap < 0.3 + 0.25 for gap in gaps), gaps
    if expected == "failed":
        with psycopg.connect(wf_dsn) as conn:
            row = conn.execute(
                "SELECT result::jsonb #>> '{}' FROM df.instance_nodes(%s) WHERE node_type = 'SQL'"
                " AND status = 'failed' ORDER BY node_id LIMIT 1",
                (instance,),
            ).fetchone()
        assert row is not None and "attempt 2 failed" in str(row[0]), row


@pytest.mark.parametrize("code", ["42601", "23505"])
def test_an_error_another_attempt_cannot_escape_is_not_retried(wf_dsn: str, code: str) -> None:
    counter = make_counter(wf_dsn)
    policy = ", max_attempts => 5, max_backoff => '0.2s'"
    instance = start(wf_dsn, "%s", counter.step(failures=5, code=code), policy=policy)
    assert await_status(wf_dsn, instance) == "failed"
    assert counter.attempts() == 1
    assert effects(wf_dsn, instance) == []


def test_without_a_policy_a_step_fails_at_once(wf_dsn: str) -> None:
    counter = make_counter(wf_dsn)
    instance = start(wf_dsn, "'SELECT 1' ~> %s", counter.step(failures=1))
    assert await_status(wf_dsn, instance) == "failed"
    assert counter.attempts() == 1


@pytest.mark.parametrize(
    ("policy", "sqlstate", "message"),
    [
        ("on_failure => 'retry'", "22023", 'invalid on_failure "retry" for df.start()'),
        ("on_failure => 'continue'", "0A000", "on_failure => 'continue' is not supported"),
        ("max_attempts => 0", "22023", "invalid max_attempts 0 for df.start()"),
        ("max_backoff => '0s'", "22023", 'invalid max_backoff "00:00:00" for df.start()'),
    ],
)
def test_a_bad_policy_is_refused(wf_dsn: str, policy: str, sqlstate: str, message: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"SELECT df.start('SELECT 1', {policy})")
        assert caught.value.sqlstate == sqlstate
        assert message in str(caught.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- a pgdurable of its own: HTTP steps to a local server, and a kill during a backoff -------

DATABASE = "retries"
ROLE = "retry_user"
ARGS = ["--lease-seconds", "2", "--poll-interval", "0.2"]


@dataclass
class Own:
    cluster: Cluster
    server: ServerThread
    args: list[str]
    proxy: ProxyProcess

    @property
    def dsn(self) -> str:
        return self.proxy.dsn(ROLE, dbname=DATABASE)


@pytest.fixture(scope="module")
def own(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    server = ServerThread().start()
    database_with_role(cluster, DATABASE, ROLE)
    args = [*ARGS, "--http-allow", f"{server.host}:{server.port}"]
    log = tmp_path_factory.mktemp("retries") / "pgdurable.log"
    proxy = ProxyProcess(cluster.dsn(dbname=DATABASE), extra_args=args, log_path=log).start()
    with psycopg.connect(proxy.dsn(dbname=DATABASE), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s, include_http => true)", (ROLE,))
    setup = Own(cluster, server, args, proxy)
    try:
        yield setup
    finally:
        setup.proxy.stop()
        server.stop()


def test_http_503_is_retried_after_its_retry_after(own: Own) -> None:
    url = own.server.url(f"/flaky/{uuid.uuid4().hex}?fail=1&after=1")
    policy = ", max_attempts => 3, max_backoff => '2s'"
    instance = start(own.dsn, "df.http(%s, 'GET')", url, policy=policy)
    assert await_status(own.dsn, instance) == "completed"
    with psycopg.connect(own.dsn) as conn:
        row = conn.execute("SELECT df.result(%s)", (instance,)).fetchone()
    assert row is not None
    response = json.loads(row[0])
    assert response["status"] == 200, response
    calls = json.loads(response["body"])["calls"]
    assert len(calls) == 2
    assert 1.0 <= calls[1] - calls[0] < 1.8, calls  # Retry-After: 1, within max_backoff 2 s


def test_a_kill_during_a_backoff_keeps_the_schedule_and_the_attempts(own: Own) -> None:
    counter = make_counter(own.dsn)
    policy = ", max_attempts => 3, max_backoff => '2s'"
    instance = start(own.dsn, "%s", counter.step(failures=3), policy=policy)
    deadline = time.monotonic() + 10
    while node_details(own.cluster.dsn(dbname=DATABASE), instance).get("attempt") != 3:
        assert time.monotonic() < deadline  # not yet waiting for the 3rd attempt
        time.sleep(0.05)
    own.proxy.kill()
    direct = own.cluster.dsn(dbname=DATABASE)
    counter = Counter(counter.name, direct)
    details = node_details(direct, instance)
    with psycopg.connect(direct) as conn:
        row = conn.execute("SELECT df.explain(%s)", (instance,)).fetchone()
    own.proxy = ProxyProcess(own.proxy.upstream, extra_args=own.args).start()
    assert row is not None and "attempt 3/3" in row[0], row
    assert details["max_attempts"] == 3
    assert "attempt 2 failed" in str(details["last_error"])
    assert await_status(own.dsn, instance) == "failed"
    assert counter.attempts() == 3  # not counted again from 1 after the restart
    times = counter.times()
    assert times[2] >= float(str(details["next_attempt_epoch"])), (times, details)
    assert effects(direct, instance) == []
