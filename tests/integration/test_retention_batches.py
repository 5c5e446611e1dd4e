"""df._prune_finished, one retention batch, on a catalog with no engine running: which
instances a batch takes and why, what it leaves to others (a held instance, a pass of
another process), and that an instance's nodes go in time linear in their number.

Instances are written by hand as the admin, as the engine would leave them.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import create_database, install_catalog

PRUNE_LOCK = 0x70676472  # ASCII "pgdr", the key in df._prune_finished
PRUNE = "SELECT by_age, by_cap FROM df._prune_finished(%s::interval, %s, %s)"


@pytest.fixture(scope="module")
def dsn(cluster: Cluster) -> str:
    dsn = create_database(cluster, "retention_batches")
    install_catalog(dsn)
    return dsn


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("TRUNCATE df.instances, df.nodes CASCADE")
        yield connection


def _instance(conn: psycopg.Connection, number: int, status: str, age: str, nodes: int = 1) -> str:
    """An instance `age` old: a chain of THEN nodes over `nodes` SQL steps."""
    instance = f"{number:08x}"
    completed = "now() - %(age)s::interval" if status == "completed" else "NULL"
    with conn.transaction():
        conn.execute(
            "INSERT INTO df.instances (id, root_node, status, submitted_by, created_at, "
            f"completed_at) VALUES (%(id)s, '00000000', %(status)s, 'postgres', "
            f"now() - %(age)s::interval, {completed})",
            {"id": instance, "status": status, "age": age},
        )
        conn.execute(
            "INSERT INTO df.nodes (id, instance_id, node_type, query, left_node, right_node, "
            "submitted_by) "
            "SELECT lpad(to_hex(g), 8, '0'), %(id)s, CASE WHEN t THEN 'THEN' ELSE 'SQL' END, "
            "CASE WHEN t THEN NULL ELSE 'SELECT 1' END, "
            "CASE WHEN t THEN lpad(to_hex(g + 1), 8, '0') END, "
            "CASE WHEN t THEN lpad(to_hex(g + 2), 8, '0') END, 'postgres' "
            "FROM generate_series(0, 2 * %(steps)s - 2) g, "
            "LATERAL (SELECT g %% 2 = 0 AND g < 2 * %(steps)s - 2) AS c(t)",
            {"id": instance, "steps": nodes},
        )
    return instance


def _prune(conn: psycopg.Connection, keep: int, batch: int) -> tuple[int, int] | None:
    row = conn.execute(PRUNE, ("1 day", keep, batch)).fetchone()
    return None if row is None else (row[0], row[1])


def _ids(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT id FROM df.instances")}


def test_a_batch_takes_the_oldest_finished_and_says_why(conn: psycopg.Connection) -> None:
    aged = [
        _instance(conn, 1, "completed", "4 days"),
        _instance(conn, 2, "failed", "3 days"),
        _instance(conn, 3, "cancelled", "2 days"),
    ]
    unfinished = [_instance(conn, 4, "running", "9 days"), _instance(conn, 5, "pending", "9 days")]
    young = [_instance(conn, n, "completed", f"{10 - n} minutes") for n in (6, 7, 8)]
    assert _prune(conn, 2, 2) == (2, 0)
    assert _ids(conn) == {aged[2], *unfinished, *young}
    assert _prune(conn, 2, 2) == (1, 1)  # then the oldest beyond the newest 2
    assert _prune(conn, 2, 2) == (0, 0)
    assert _ids(conn) == {*unfinished, *young[1:]}
    assert _prune(conn, 0, 500) == (0, 0)  # 0: no cap


def test_a_held_instance_is_skipped_not_waited_for(conn: psycopg.Connection, dsn: str) -> None:
    held = _instance(conn, 1, "completed", "5 days")
    free = _instance(conn, 2, "failed", "4 days")
    with psycopg.connect(dsn) as other:
        other.execute("SELECT 1 FROM df.instances WHERE id = %s FOR UPDATE", (held,))
        conn.execute("SET lock_timeout = '1s'")
        assert _prune(conn, 0, 500) == (1, 0)
        assert _ids(conn) == {held}
    assert free not in _ids(conn)
    assert _prune(conn, 0, 500) == (1, 0)
    assert _ids(conn) == set()


def test_one_process_prunes_at_a_time(conn: psycopg.Connection, dsn: str) -> None:
    _instance(conn, 1, "completed", "5 days")
    with psycopg.connect(dsn) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        assert _prune(conn, 0, 500) is None
    assert _prune(conn, 0, 500) == (1, 0)


def test_a_large_graph_goes_in_time_linear_in_its_nodes(conn: psycopg.Connection) -> None:
    steps = 400  # 799 nodes
    _instance(conn, 1, "completed", "5 days", nodes=steps)
    with conn.transaction():
        assert _prune(conn, 0, 500) == (1, 0)
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the foreign keys' checks, now
        row = conn.execute(
            "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relid = 'df.nodes'::regclass"
        ).fetchone()
    assert row is not None
    # a few index lookups per node; scanning the instance's nodes per node read 1,000,000
    assert row[0] < 20 * 2 * steps


def test_autovacuum_never_truncates_the_tables_retention_deletes_from(
    conn: psycopg.Connection,
) -> None:
    """Truncating a table's emptied end takes an ACCESS EXCLUSIVE lock, which a df.start's
    INSERT would wait for beside a retention pass: the tables it deletes from are kept whole."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'df'::regnamespace "
        "AND c.relkind = 'r' AND c.reloptions @> '{vacuum_truncate=off}' ORDER BY 1"
    ).fetchall()
    assert [name for (name,) in rows] == [
        "_advance",
        "_executions",
        "_instance_vars",
        "_node_state",
        "_tasks",
        "instances",
        "nodes",
    ]
