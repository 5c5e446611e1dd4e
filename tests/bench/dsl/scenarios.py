"""The measured workflows: JOIN, RACE, signal-to-resume, timer and loop pacing.

Each scenario starts one workflow at a time through pgdurable as the non-superuser `bench`
role and learns about completion from a second connection polling `df.status` every
`poll_s` (1 ms). Server-side figures come from the catalog (`df.instances`, `df.nodes`)
and from `clock_timestamp()` inside the steps, so both ends of those use the server clock.
pg_stat_activity is read over a direct superuser connection to PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

TERMINAL = frozenset({"completed", "failed", "cancelled"})
LOOP_TABLE = "bench_loop"
LOOP_DDL = f"CREATE TABLE {LOOP_TABLE} (instance_id text NOT NULL, at timestamptz NOT NULL)"

JOIN_GRAPH = "('SELECT pg_sleep(1)') & ('SELECT pg_sleep(2)')"
RACE_GRAPH = "'SELECT pg_sleep(1)' | 'SELECT pg_sleep(5)'"
RACE_LOSER_SQL = "SELECT pg_sleep(5)"
SIGNAL_GRAPH = "df.wait_for_signal('go') ~> 'SELECT clock_timestamp() AS resumed'"
TIMER_GRAPH = "df.sleep(1) ~> 'SELECT clock_timestamp() AS woke'"


def loop_graph(iterations: int) -> str:
    """A loop whose body records clock_timestamp() once per iteration, `iterations` times."""
    me = "''{sys_instance_id}''"  # substituted by pgdurable when the step runs
    body = f"INSERT INTO {LOOP_TABLE} (instance_id, at) VALUES ({me}, clock_timestamp())"
    cond = f"SELECT count(*) < {iterations} FROM {LOOP_TABLE} WHERE instance_id = {me}"
    return f"df.loop('{body}', '{cond}')"


class ScenarioError(Exception):
    """One repeat could not be measured (start failed, timed out, wrong status...)."""


@dataclass
class ScenarioResult:
    """All repeats of one scenario: each metric's values in ms, one per repeat (or interval)."""

    name: str
    title: str
    graph: str
    repeats: int
    metrics: dict[str, list[float]] = field(default_factory=dict)
    instances: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, metric: str, seconds: float) -> None:
        self.metrics.setdefault(metric, []).append(round(seconds * 1000, 3))


@dataclass
class LoserWatch:
    """The RACE loser's backend in pg_stat_activity: seen active, then first seen gone."""

    seen: bool = False
    gone_at: dt.datetime | None = None  # server clock of the first poll without it
    gone_perf: float | None = None  # perf_counter of that poll

    def record(self, active: int, server_now: dt.datetime, perf_now: float) -> None:
        if active:
            self.seen = True
        elif self.gone_at is None:
            self.gone_at, self.gone_perf = server_now, perf_now


@dataclass
class Settings:
    client_dsn: str  # through pgdurable, as the bench role
    admin_dsn: str  # straight to PostgreSQL, as the superuser
    poll_s: float
    timeout_s: float
    pause_s: float  # idle time between repeats
    loop_iterations: int
    min_loop_iteration_s: float


Conn = psycopg.Connection[Any]


class Bench:
    """The three connections and the helpers every scenario uses."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.client: Conn = self._connect(settings.client_dsn)  # df.start, df.signal
        self.watch: Conn = self._connect(settings.client_dsn)  # the 1 ms polls
        self.admin: Conn = self._connect(settings.admin_dsn)  # pg_stat_activity
        self.polls = 0

    @staticmethod
    def _connect(dsn: str) -> Conn:
        # autocommit, no server-side prepares: each statement is one round trip whose text
        # pgdurable sees, as in tests/bench/workflows.
        return psycopg.connect(dsn, autocommit=True, prepare_threshold=None)

    def close(self) -> None:
        for conn in (self.client, self.watch, self.admin):
            conn.close()

    def one(self, conn: Conn, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = conn.execute(sql, params).fetchone()
        if row is None:
            raise ScenarioError(f"no row from {sql!r}")
        return row[0]

    def start(self, graph: str) -> tuple[str, float]:
        """df.start(graph) on the client connection: (instance id, perf_counter before)."""
        t = time.perf_counter()
        try:
            instance = self.one(self.client, f"SELECT df.start({graph})")
        except psycopg.Error as exc:
            raise ScenarioError(f"df.start failed: {exc}") from exc
        return str(instance), t

    def poll(
        self,
        sql: str,
        params: tuple[Any, ...],
        done: Callable[[Any], bool],
        what: str,
        on_poll: Callable[[float], None] | None = None,
    ) -> tuple[Any, float]:
        """Run `sql` on the watcher every poll_s until done(value): (value, perf_counter)."""
        deadline = time.perf_counter() + self.s.timeout_s
        while True:
            value = self.one(self.watch, sql, params)
            now = time.perf_counter()
            self.polls += 1
            if done(value):
                return value, now
            if now > deadline:
                raise ScenarioError(f"{what}: still {value!r} after {self.s.timeout_s:g} s")
            if on_poll is not None:
                on_poll(now)
            time.sleep(self.s.poll_s)

    def wait_terminal(self, instance: str, on_poll: Callable[[float], None] | None = None) -> float:
        """Poll df.status until terminal; perf_counter when `completed` was seen."""
        status, seen = self.poll(
            "SELECT df.status(%s)",
            (instance,),
            lambda v: v in TERMINAL,
            f"instance {instance}",
            on_poll,
        )
        if status != "completed":
            raise ScenarioError(f"instance {instance} ended {status}: {self.output(instance)}")
        return float(seen)

    def output(self, instance: str) -> str:
        row = self.client.execute("SELECT output FROM df.instance_info(%s)", (instance,)).fetchone()
        return "" if row is None else str(row[0])[:300]

    def server_elapsed(self, instance: str) -> float:
        """df.instances completed_at - created_at, in seconds."""
        return float(
            self.one(
                self.client,
                "SELECT extract(epoch FROM completed_at - created_at)::float8 "
                "FROM df.instances WHERE id = %s",
                (instance,),
            )
        )

    def step_time(self, instance: str, column: str) -> dt.datetime:
        """The timestamp the instance's SQL step returned as `column`."""
        value = self.one(
            self.client,
            "SELECT (result -> 'rows' -> 0 ->> %s)::timestamptz FROM df.nodes "
            "WHERE instance_id = %s AND node_type = 'SQL' AND status = 'completed'",
            (column, instance),
        )
        if not isinstance(value, dt.datetime):
            raise ScenarioError(f"instance {instance}: no {column} timestamp in its SQL step")
        return value

    def created_at(self, instance: str) -> dt.datetime:
        value = self.one(
            self.client, "SELECT created_at FROM df.instances WHERE id = %s", (instance,)
        )
        assert isinstance(value, dt.datetime)
        return value

    def loser_activity(self) -> tuple[int, dt.datetime]:
        """Backends other than ours running the RACE's losing SQL, and the server clock."""
        row = self.admin.execute(
            "SELECT count(*), clock_timestamp() FROM pg_stat_activity WHERE state = 'active' "
            "AND query = %s AND pid <> pg_backend_pid()",
            (RACE_LOSER_SQL,),
        ).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    def warm_up(self) -> None:
        """One unmeasured JOIN of two trivial steps: opens pgdurable's step connections."""
        instance, _ = self.start("('SELECT 1') & ('SELECT 2')")
        self.wait_terminal(instance)

    # -- scenarios -----------------------------------------------------------------------

    def join_once(self, r: ScenarioResult) -> None:
        instance, t0 = self.start(JOIN_GRAPH)
        r.instances.append(instance)
        seen = self.wait_terminal(instance)
        r.add("client: start → completed seen − 2 s", seen - t0 - 2.0)
        r.add("server: completed_at − created_at − 2 s", self.server_elapsed(instance) - 2.0)

    def race_once(self, r: ScenarioResult) -> None:
        loser = LoserWatch()

        def look_for_loser(now: float) -> None:
            if now - t0 > 0.5 and loser.gone_at is None:  # both branches are running by then
                loser.record(*self.loser_activity(), now)

        instance, t0 = self.start(RACE_GRAPH)
        r.instances.append(instance)
        seen = self.wait_terminal(instance, look_for_loser)
        r.add("client: start → completed seen − 1 s", seen - t0 - 1.0)
        r.add("server: completed_at − created_at − 1 s", self.server_elapsed(instance) - 1.0)
        deadline = time.perf_counter() + self.s.timeout_s
        while loser.gone_at is None:
            now = time.perf_counter()
            loser.record(*self.loser_activity(), now)
            if loser.gone_at is None and now > deadline:
                raise ScenarioError(
                    f"instance {instance}: `{RACE_LOSER_SQL}` still active "
                    f"{self.s.timeout_s:g} s after the race completed"
                )
            time.sleep(self.s.poll_s)
        if not loser.seen:
            r.errors.append(
                f"instance {instance}: the losing `{RACE_LOSER_SQL}` was never seen active "
                "in pg_stat_activity (from 0.5 s into the race)"
            )
            return
        assert loser.gone_at is not None and loser.gone_perf is not None
        completed_at = self.one(
            self.client, "SELECT completed_at FROM df.instances WHERE id = %s", (instance,)
        )
        r.add(
            "loser gone − completed_at (server clock)",
            (loser.gone_at - completed_at).total_seconds(),
        )
        r.add("loser gone − completed seen (client clock)", loser.gone_perf - seen)

    def signal_once(self, r: ScenarioResult) -> None:
        instance, _ = self.start(SIGNAL_GRAPH)
        r.instances.append(instance)
        status, _ = self.poll(
            "SELECT status FROM df.nodes WHERE instance_id = %s AND node_type = 'SIGNAL'",
            (instance,),
            lambda v: v != "pending",
            f"instance {instance}: SIGNAL node",
        )
        if status != "running":
            raise ScenarioError(f"instance {instance}: SIGNAL node went {status}, not running")
        t_client = time.perf_counter()
        row = self.client.execute(
            "SELECT clock_timestamp(), df.signal(%s, 'go', '{}')", (instance,)
        ).fetchone()
        if row is None or row[1] != "OK":
            raise ScenarioError(f"instance {instance}: df.signal returned {row!r}")
        t0: dt.datetime = row[0]
        seen = self.wait_terminal(instance)
        resumed = self.step_time(instance, "resumed")
        r.add("server: resumed − signal clock_timestamp()", (resumed - t0).total_seconds())
        r.add("client: signal sent → completed seen", seen - t_client)

    def timer_once(self, r: ScenarioResult) -> None:
        instance, t0 = self.start(TIMER_GRAPH)
        r.instances.append(instance)
        seen = self.wait_terminal(instance)
        woke = self.step_time(instance, "woke")
        created = self.created_at(instance)
        r.add("server: woke − (created_at + 1 s)", (woke - created).total_seconds() - 1.0)
        r.add("client: start → completed seen − 1 s", seen - t0 - 1.0)

    def loop_once(self, r: ScenarioResult) -> None:
        instance, _ = self.start(loop_graph(self.s.loop_iterations))
        r.instances.append(instance)
        self.wait_terminal(instance)
        rows = self.client.execute(
            f"SELECT at FROM {LOOP_TABLE} WHERE instance_id = %s ORDER BY at", (instance,)
        ).fetchall()
        times: list[dt.datetime] = [row[0] for row in rows]
        if len(times) != self.s.loop_iterations:
            raise ScenarioError(
                f"instance {instance}: {len(times)} iterations, {self.s.loop_iterations} expected"
            )
        created = self.created_at(instance)
        r.add("server: first iteration − created_at", (times[0] - created).total_seconds())
        for a, b in itertools.pairwise(times):
            r.add(
                f"server: iteration interval − {self.s.min_loop_iteration_s:g} s",
                (b - a).total_seconds() - self.s.min_loop_iteration_s,
            )


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    graph: Callable[[Settings], str]
    run_once: Callable[[Bench, ScenarioResult], None]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("join", "JOIN overhead", lambda _: JOIN_GRAPH, Bench.join_once),
        Scenario("race", "RACE overhead", lambda _: RACE_GRAPH, Bench.race_once),
        Scenario("signal", "Signal-to-resume", lambda _: SIGNAL_GRAPH, Bench.signal_once),
        Scenario("timer", "Timer lateness", lambda _: TIMER_GRAPH, Bench.timer_once),
        Scenario(
            "loop",
            "Loop pacing",
            lambda s: loop_graph(s.loop_iterations),
            Bench.loop_once,
        ),
    )
}


def run_scenario(
    bench: Bench, scenario: Scenario, repeats: int, log: Callable[[str], None]
) -> ScenarioResult:
    """`repeats` runs of one scenario, one workflow at a time; failures are recorded."""
    result = ScenarioResult(scenario.name, scenario.title, scenario.graph(bench.s), repeats=repeats)
    for i in range(repeats):
        time.sleep(bench.s.pause_s)
        try:
            scenario.run_once(bench, result)
        except ScenarioError as exc:
            result.errors.append(str(exc))
            log(f"{scenario.name} #{i + 1}: {exc}")
            continue
        last = {k: v[-1] for k, v in result.metrics.items()}
        log(f"{scenario.name} #{i + 1}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in last.items()))
    return result
