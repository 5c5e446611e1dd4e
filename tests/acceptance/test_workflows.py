"""Workflows of SQL and THEN steps: results, names, variables, call sites, failures."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_running
from tests.support.workflows import start_and_await as _run


def _result(dsn: str, instance: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT df.result(%s)", (instance,)).fetchone()
        assert row is not None
        return json.loads(row[0]) if row[0] is not None else None


def test_named_results_and_substitution(wf_dsn: str) -> None:
    graph = (
        "'SELECT 21 AS n, ''it''''s'' AS quote' |=> 'a' ~> "
        "'SELECT $a * 2 AS doubled, $a.quote AS q, $a? AS maybe' ~> "
        "'SELECT * FROM $a.* '"
    )
    instance, status = _run(wf_dsn, graph)
    assert status == "completed"
    assert _result(wf_dsn, instance) == {"rows": [{"n": 21, "quote": "it's"}], "row_count": 1}
    with psycopg.connect(wf_dsn) as conn:
        mid = conn.execute(
            "SELECT result::jsonb FROM df.instance_nodes(%s) WHERE query LIKE 'SELECT $a * 2%%'",
            (instance,),
        ).fetchone()
    assert mid is not None and mid[0]["rows"] == [{"doubled": 42, "q": "it's", "maybe": 21}]


def test_variables_are_snapshotted_at_start(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("SELECT df.setvar('color', 'blue')")
        instance = conn.execute(
            "SELECT df.start('SELECT pg_sleep(0.3)' ~> 'SELECT ''{color}'' AS c, "
            "''{sys_label}'' AS l', 'lbl')"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT df.setvar('color', 'red')")
        assert conn.execute("SELECT df.getvar('color')").fetchone() == ("red",)
        assert conn.execute("SELECT df.await_instance(%s, 10)", (instance,)).fetchone() == (
            "completed",
        )
        result = conn.execute("SELECT df.result(%s)::jsonb", (instance,)).fetchone()
        assert result is not None and result[0]["rows"] == [{"c": "blue", "l": "lbl"}]
        conn.execute("SELECT df.clearvars()")


def test_types_map_like_pg_durable(wf_dsn: str) -> None:
    graph = (
        "$$SELECT 1.50::numeric AS num, '2024-06-15 12:00:00+00'::timestamptz AS tz, "
        "'2024-06-15 12:00:00.5'::timestamp AS ts, '2024-06-15'::date AS d, "
        "'{\"k\": [1]}'::jsonb AS j, NULL::text AS nothing, 0.1::real AS r, "
        "'NaN'::float8 AS nan, true AS b, 7::int2 AS s$$"
    )
    instance, status = _run(wf_dsn, graph)
    assert status == "completed"
    with psycopg.connect(wf_dsn) as conn:
        raw = conn.execute("SELECT output FROM df.instance_info(%s)", (instance,)).fetchone()
    assert raw is not None
    assert raw[0] == (
        '{"rows":[{"num":"1.50","tz":"2024-06-15T12:00:00+00:00","ts":"2024-06-15T12:00:00.500",'
        '"d":"2024-06-15","j":{"k":[1]},"nothing":null,"r":0.10000000149011612,"nan":null,'
        '"b":true,"s":7}],"row_count":1}'
    )


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ("'SELECT 1/0'", "SQL execution failed: error returned from database: division by zero"),
        ("'SELECT ''\\x00''::bytea AS b'", "Unsupported column type 'BYTEA' for column 'b'"),
        (
            "'SELECT 1 WHERE false' |=> 'e' ~> 'SELECT $e'",
            "$e has no rows — query returned zero results",
        ),
    ],
)
def test_step_failures_fail_the_instance(wf_dsn: str, graph: str, message: str) -> None:
    instance, status = _run(wf_dsn, graph)
    assert status == "failed"
    with psycopg.connect(wf_dsn) as conn:
        rows = conn.execute(
            "SELECT status, result #>> '{}' FROM df.nodes WHERE instance_id = %s", (instance,)
        ).fetchall()
        failed = [text for status, text in rows if status == "failed"]
        assert failed and all(message in text for text in failed)
        assert conn.execute("SELECT df.result(%s)", (instance,)).fetchone() == (None,)
        out = conn.execute(
            "SELECT status, output FROM df.instance_executions(%s)", (instance,)
        ).fetchone()
        assert out is not None and out[0] == "Failed" and message in out[1]


def test_rollback_means_never_ran(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS rb_t (v int)")
        conn.commit()
        instance = conn.execute("SELECT df.start('INSERT INTO rb_t VALUES (1)')").fetchone()
        conn.rollback()
        assert instance is not None
        assert conn.execute("SELECT df.status(%s)", (instance[0],)).fetchone() == (None,)
        conn.execute("SELECT pg_sleep(1.5)")
        assert conn.execute("SELECT count(*) FROM rb_t").fetchone() == (0,)


def test_started_from_plpgsql_and_direct_connection(wf_dsn: str, cluster: Cluster) -> None:
    direct = cluster.dsn("wf_user")  # bypasses pgdurable entirely
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS call_sites (site text)")
        conn.execute("""DO $$
            DECLARE i text;
            BEGIN
                i := df.start('INSERT INTO call_sites VALUES (''plpgsql'')');
                PERFORM set_config('test.instance', i, false);
            END $$""")
        from_do = conn.execute("SELECT current_setting('test.instance')").fetchone()
        direct_id = conn.execute(
            "SELECT df.start('INSERT INTO call_sites VALUES (''direct'')')"
        ).fetchone()
        assert from_do is not None and direct_id is not None
        for instance in (from_do[0], direct_id[0]):
            assert conn.execute("SELECT df.await_instance(%s, 10)", (instance,)).fetchone() == (
                "completed",
            )
        sites = conn.execute("SELECT array_agg(site ORDER BY site) FROM call_sites").fetchone()
        assert sites == (["direct", "plpgsql"],)


def test_steps_run_as_the_owner_with_in_workflow_set(wf_dsn: str) -> None:
    instance, status = _run(
        wf_dsn,
        "'SELECT current_user AS u, session_user AS s, current_setting(''df.in_workflow'') AS w'",
    )
    assert status == "completed"
    assert _result(wf_dsn, instance) == {
        "rows": [{"u": "wf_user", "s": "wf_user", "w": "true"}],
        "row_count": 1,
    }
    instance, status = _run(wf_dsn, "'SELECT df.setvar(''x'', ''y'')'")
    assert status == "failed"


def test_non_transactional_statement_is_at_least_once(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS vac_t (v int)")
    instance, status = _run(wf_dsn, "'VACUUM vac_t'")
    assert status == "completed"
    with psycopg.connect(wf_dsn) as conn:
        details = conn.execute(
            "SELECT status_details FROM df.instance_nodes(%s)", (instance,)
        ).fetchone()
    assert details is not None and "at-least-once" in str(details[0])


def test_repeated_step_sees_a_changed_table(wf_dsn: str) -> None:
    """Step statements are prepared once per step connection; a changed result type makes
    the step run again, freshly prepared, not fail."""
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS cached_t")
        conn.execute("CREATE TABLE cached_t (a int)")
        conn.execute("INSERT INTO cached_t VALUES (1)")
    for _ in range(3):  # prepared on the step connections this runs on
        instance, status = _run(wf_dsn, "'SELECT * FROM cached_t'")
        assert status == "completed"
        assert _result(wf_dsn, instance) == {"rows": [{"a": 1}], "row_count": 1}
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE cached_t ADD COLUMN b text DEFAULT 'x'")
    for graph in ("'SELECT * FROM cached_t'", "'SELECT * FROM cached_t' ~> 'SELECT 2 AS n'"):
        instance, status = _run(wf_dsn, graph)
        assert status == "completed"
    with psycopg.connect(wf_dsn) as conn:
        first = conn.execute(
            "SELECT result::jsonb FROM df.instance_nodes(%s) "
            "WHERE query = 'SELECT * FROM cached_t'",
            (instance,),
        ).fetchone()
    assert first is not None and first[0] == {"rows": [{"a": 1, "b": "x"}], "row_count": 1}


def test_superuser_instances_are_refused_by_default(proxy: ProxyProcess) -> None:
    with (
        psycopg.connect(proxy.dsn()) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as info,
    ):
        conn.execute("SELECT df.start('SELECT 1')")
    assert "superuser instances are disabled" in str(info.value)


def test_cancel(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        instance = conn.execute("SELECT df.start('SELECT pg_sleep(30)')").fetchone()[0]  # type: ignore[index]
        message = conn.execute("SELECT df.cancel(%s)", (instance,)).fetchone()
        assert message == (f"Instance {instance} cancelled: Cancelled by user",)
        assert conn.execute("SELECT df.await_instance(%s, 5)", (instance,)).fetchone() == (
            "cancelled",
        )
        assert conn.execute("SELECT df.status(%s)", (instance,)).fetchone() == ("cancelled",)


def test_steps_can_run_in_another_database(wf_dsn: str, cluster: Cluster) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = 'wf_other'").fetchone() is None:
            admin.execute("CREATE DATABASE wf_other")
    instance, status = _run(wf_dsn, "'SELECT current_database() AS db', database => 'wf_other'")
    assert status == "completed"
    assert _result(wf_dsn, instance) == {"rows": [{"db": "wf_other"}], "row_count": 1}


def test_sessions_on_other_databases_pass_through(proxy: ProxyProcess, cluster: Cluster) -> None:
    from tests.support.metrics import read_metrics

    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = 'wf_other'").fetchone() is None:
            admin.execute("CREATE DATABASE wf_other")
    before = read_metrics(proxy.http_port)
    with psycopg.connect(proxy.dsn(dbname="wf_other"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidSchemaName):
            conn.execute("SELECT df.start('SELEC 1')")  # no catalog there: the server says so
    after = read_metrics(proxy.http_port)
    assert after["candidates_total"] == before["candidates_total"]


def test_grant_and_revoke_notices(proxy: ProxyProcess, cluster: Cluster) -> None:
    notices: list[str] = []
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'notice_role'").fetchone() is None:
            admin.execute("CREATE ROLE notice_role LOGIN")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("SELECT df.grant_usage('notice_role')")
        conn.execute("SELECT df.revoke_usage('notice_role')")
    assert notices == [
        'pg_durable: granted df usage privileges to "notice_role"',
        'pg_durable: revoked df usage privileges granted by "postgres" from "notice_role"',
    ]


def test_list_instances_pagination(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        label = "page-test"
        ids = {
            conn.execute("SELECT df.start('SELECT 1', %s)", (label,)).fetchone()[0]  # type: ignore[index]
            for _ in range(5)
        }
        for instance in ids:
            conn.execute("SELECT df.await_instance(%s, 10)", (instance,))
        seen: list[str] = []
        cursor = None
        while True:
            rows = conn.execute(
                "SELECT instance_id, next_cursor FROM df.list_instances(NULL, 2, %s, %s)",
                (label, cursor),
            ).fetchall()
            seen += [r[0] for r in rows]
            cursor = rows[-1][1] if rows else None
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) and ids <= set(seen)
        info = conn.execute(
            "SELECT status, current_execution_id FROM df.instance_info(%s)", (next(iter(ids)),)
        ).fetchone()
        assert info == ("completed", 1)


def test_steps_advance_from_held_state(proxy: ProxyProcess, wf_dsn: str) -> None:
    """Each step of a sequence advances its instance in the step's own transaction from the
    state the engine holds (no reload), and that state matches the database: the test
    processes run with --verify-held-state, which stops pgdurable on any difference."""
    from tests.support.metrics import read_metrics

    before = read_metrics(proxy.http_port)
    graph = "'SELECT 1 AS a' |=> 'x' ~> 'SELECT $x.a + 1 AS b' ~> ('SELECT 3' & 'SELECT 4')"
    instance, status = _run(wf_dsn, graph)
    assert status == "completed"
    assert _result(wf_dsn, instance) == [
        {"rows": [{"?column?": 3}], "row_count": 1},
        {"rows": [{"?column?": 4}], "row_count": 1},
    ]
    after = read_metrics(proxy.http_port)
    held = after["in_step_advances_held_total"] - before["in_step_advances_held_total"]
    first = after["first_steps_total"] - before["first_steps_total"]
    # the first step may run in the instance's first transaction (below); the second one
    # advances from held state (the JOIN branches do too unless they finish together)
    assert held >= 1 and held + first >= 2, after
    assert proxy.process is not None and proxy.process.poll() is None


# The first-transaction path is taken only when the engine has a free step slot and no
# advance queued; the session's proxy also serves other tests' leftovers (schedules,
# sleepers), so a scenario is repeated until the engine took that path, or fails after this.
FIRST_PATH_ATTEMPTS = 5


def _first_path_taken(proxy: ProxyProcess, counter: str, scenario: Callable[[], None]) -> None:
    """Run a scenario (which checks its own outcome) until `counter` moved by exactly one."""
    from tests.support.metrics import read_metrics

    moved: list[float] = []
    for _ in range(FIRST_PATH_ATTEMPTS):
        before = read_metrics(proxy.http_port)[counter]
        scenario()
        moved.append(read_metrics(proxy.http_port)[counter] - before)
        if moved[-1] == 1:
            return
        assert moved[-1] == 0, moved  # never more than the one instance started
    pytest.fail(f"the engine never took the first-transaction path: {counter} moved {moved}")


def test_a_new_instance_runs_its_first_step_in_its_first_transaction(
    proxy: ProxyProcess, wf_dsn: str
) -> None:
    """An idle engine advances a new instance and runs its first SQL step in one
    transaction on the owner's connection, exactly once."""
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS first_step_rows (instance text)")

    def scenario() -> None:
        graph = "'INSERT INTO first_step_rows SELECT ''{sys_instance_id}''' ~> 'SELECT 2 AS two'"
        instance, status = _run(wf_dsn, graph)
        assert status == "completed"
        with psycopg.connect(wf_dsn) as conn:
            rows = conn.execute(
                "SELECT count(*) FROM first_step_rows WHERE instance = %s", (instance,)
            ).fetchone()
            nodes = conn.execute(
                "SELECT status, count(*) FROM df.nodes WHERE instance_id = %s GROUP BY 1",
                (instance,),
            ).fetchall()
        assert rows == (1,)
        assert nodes == [("completed", 3)]
        assert _result(wf_dsn, instance) == {"rows": [{"two": 2}], "row_count": 1}

    _first_path_taken(proxy, "first_steps_total", scenario)


def test_a_slow_first_step_shows_as_running_and_runs_once(proxy: ProxyProcess, wf_dsn: str) -> None:
    """A first step still running after a few milliseconds is promoted: its instance shows
    as running while it runs, and it still runs exactly once."""
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS first_step_rows (instance text)")

    def scenario() -> None:
        with psycopg.connect(wf_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT df.start('INSERT INTO first_step_rows "
                "SELECT ''{sys_instance_id}'' FROM pg_sleep(0.5)')"
            ).fetchone()
            assert row is not None
            instance = str(row[0])
            time.sleep(0.2)
            assert conn.execute("SELECT df.status(%s)", (instance,)).fetchone() == ("running",)
            assert conn.execute("SELECT df.await_instance(%s, 10)", (instance,)).fetchone() == (
                "completed",
            )
            rows = conn.execute(
                "SELECT count(*) FROM first_step_rows WHERE instance = %s", (instance,)
            ).fetchone()
        assert rows == (1,)

    _first_path_taken(proxy, "first_steps_promoted_total", scenario)


def test_a_status_set_by_hand_stops_the_next_step(wf_dsn: str) -> None:
    """Owners may UPDATE df.instances.status themselves (pg_durable grants it); a step that
    finishes afterwards sees it, even though the engine holds the instance's state."""
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS stopped_by_hand (instance text)")
        row = conn.execute(
            "SELECT df.start('SELECT pg_sleep(0.5)' ~> "
            "'INSERT INTO stopped_by_hand SELECT ''{sys_instance_id}''')"
        ).fetchone()
        assert row is not None
        instance = str(row[0])
        await_running(conn, instance)
        conn.execute("UPDATE df.instances SET status = 'cancelled' WHERE id = %s", (instance,))
        time.sleep(1.5)
        rows = conn.execute(
            "SELECT count(*) FROM stopped_by_hand WHERE instance = %s", (instance,)
        ).fetchone()
        status = conn.execute("SELECT df.status(%s)", (instance,)).fetchone()
    assert rows == (0,)
    assert status == ("cancelled",)


def test_no_session_state_survives_from_one_step_to_the_next(wf_dsn: str) -> None:
    """Step connections are pooled, but each step finds a fresh session (pg_durable opens
    one per node): settings, temp tables, held cursors and advisory locks are gone."""
    graph = (
        "'SELECT set_config(''test.leak'', ''left over'', false), pg_advisory_lock(424242)' ~> "
        "'CREATE TEMP TABLE leak_probe (x int)' ~> "
        "'SELECT current_setting(''test.leak'', true) AS setting, "
        "to_regclass(''pg_temp.leak_probe'') IS NOT NULL AS temp_table, "
        "(SELECT count(*) FROM pg_locks WHERE locktype = ''advisory'' "
        "AND pid = pg_backend_pid()) AS advisory_locks'"
    )
    instance, status = _run(wf_dsn, graph)
    assert status == "completed"
    result = _result(wf_dsn, instance)
    assert isinstance(result, dict)
    (row,) = result["rows"]
    # RESET ALL leaves a custom setting defined but empty; a new session has none at all
    assert row["setting"] in (None, "") and row["temp_table"] is False, row
    assert row["advisory_locks"] == 0, row
    with psycopg.connect(wf_dsn, autocommit=True) as conn:  # nobody holds the lock
        assert conn.execute("SELECT pg_try_advisory_lock(424242)").fetchone() == (True,)
        conn.execute("SELECT pg_advisory_unlock(424242)")


def test_a_step_may_leave_its_role_for_one_without_df(
    proxy: ProxyProcess, cluster: Cluster
) -> None:
    """A step that switches to a role of its owner's with no access to schema df still has
    its result recorded, even on a step connection that has run nothing before (a new
    owner): the engine's statements are prepared before any step runs there."""
    owner = f"switcher_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {owner} LOGIN")
        admin.execute(f"CREATE ROLE {owner}_plain NOLOGIN")
        admin.execute(f"GRANT {owner}_plain TO {owner}")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage(%s)", (owner,))
    dsn = proxy.dsn(owner)
    graph = f"'SET ROLE {owner}_plain' ~> 'SELECT current_user::text AS u'"
    instance, status = _run(dsn, graph)
    assert status == "completed", status
    assert _result(dsn, instance) == {"rows": [{"u": owner}], "row_count": 1}


def test_a_step_begins_on_the_connection_its_predecessor_committed(
    proxy: ProxyProcess, wf_dsn: str
) -> None:
    """The COMMIT of a step whose plan leaves one next SQL step also sends that step's
    BEGIN, and the engine runs the step on that connection: one round trip fewer. Each
    step still finds a reset session and sees what the one before it committed."""
    from tests.support.metrics import read_metrics

    table = f"chain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (step int, pid int)")
    before = read_metrics(proxy.http_port)["chained_steps_total"]
    steps = [
        f"'INSERT INTO {table} VALUES ({n}, pg_backend_pid())' ~> "
        f"'SELECT set_config(''work_mem'', ''{n + 1}MB'', false)' ~> "
        for n in range(1, 4)
    ]
    graph = "".join(steps) + (
        "'SELECT (SELECT setting = reset_val FROM pg_settings WHERE name = ''work_mem'') "
        f"AS fresh, (SELECT count(*) FROM {table}) AS rows'"
    )
    instance, status = _run(wf_dsn, graph)
    assert status == "completed", status
    assert _result(wf_dsn, instance) == {"rows": [{"fresh": True, "rows": 3}], "row_count": 1}
    chained = read_metrics(proxy.http_port)["chained_steps_total"] - before
    assert chained >= 5, chained  # of 7 steps: all but the first one or two


def test_a_finishing_step_hands_its_connection_to_a_waiting_one(
    proxy: ProxyProcess, wf_dsn: str
) -> None:
    """More workflows than step slots (--max-user-connections, 10): a step that finishes
    its workflow while a step of the same owner waits for a slot hands it its slot and its
    connection, whose COMMIT began the waiting step's transaction. Every step still runs
    exactly once, in a reset session."""
    from tests.support.metrics import read_metrics
    from tests.support.workflows import await_status

    table = f"handover_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (instance text, step int)")
    before = read_metrics(proxy.http_port)["handed_over_steps_total"]
    graph = " ~> ".join(
        f"'INSERT INTO {table} SELECT ''{{sys_instance_id}}'', {n} "
        f"WHERE current_setting(''test.leak'', true) IS DISTINCT FROM ''x'''"
        f" ~> 'SELECT set_config(''test.leak'', ''x'', false)'"
        for n in (1, 2)
    )
    with psycopg.connect(wf_dsn) as conn:  # all at once: they commit together
        ids = [
            str(r[0]) for r in conn.execute(f"SELECT df.start({graph}) FROM generate_series(1, 30)")
        ]
    assert {await_status(wf_dsn, i) for i in ids} == {"completed"}
    with psycopg.connect(wf_dsn) as conn:
        rows = conn.execute(f"SELECT instance, step FROM {table} ORDER BY 1, 2").fetchall()
    assert rows == sorted((i, n) for i in ids for n in (1, 2))
    assert read_metrics(proxy.http_port)["handed_over_steps_total"] > before
