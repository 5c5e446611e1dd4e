"""Password-only clusters (what managed services give): scram-sha-256 for every connection,
no trust, no peer, no superuser for pgdurable. Workflows still run as their owner."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.support.catalog import install_catalog
from tests.support.managed import ADMIN, ROOT, ManagedCluster, user_password
from tests.support.proxy import ProxyProcess
from tests.support.workflows import await_status, start_and_await


def _through(proxy: ProxyProcess, user: str, dbname: str = "postgres") -> str:
    return proxy.dsn(user, user_password(user), dbname)


def _own_database(managed: ManagedCluster, name: str) -> str:
    """A fresh database, so that only the pgdurable a test starts serves its catalog."""
    with psycopg.connect(managed.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return managed.dsn(ADMIN, name)


def _run(dsn: str, sql_text: str) -> tuple[str, str | None]:
    instance, status = start_and_await(dsn, "%s", sql_text, timeout=30)
    with psycopg.connect(dsn) as conn:
        result = conn.execute(
            "SELECT result #>> '{}' FROM df.nodes WHERE instance_id = %s", (instance,)
        ).fetchone()
    assert result is not None
    return status, result[0]


def _user_with_usage(managed: ManagedCluster, proxy: ProxyProcess, name: str) -> str:
    managed.create_user(name)
    with psycopg.connect(_through(proxy, ADMIN), autocommit=True) as admin:
        admin.execute("SELECT df.grant_usage(%s)", (name,))
    return _through(proxy, name)


def test_the_runner_is_a_member_of_its_owner_only(
    managed: ManagedCluster, managed_proxy: ProxyProcess
) -> None:
    owner = _user_with_usage(managed, managed_proxy, "mg_owner")
    with psycopg.connect(_through(managed_proxy, ADMIN), autocommit=True) as admin:
        runner = admin.execute(
            "SELECT r.rolname, r.rolcanlogin, r.rolinherit, r.rolsuper, r.rolcreaterole, "
            "array(SELECT m.roleid::regrole::text FROM pg_auth_members m "
            "      WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = 'df_run_mg_owner'"
        ).fetchone()
        stored = admin.execute("SELECT count(*) FROM df._runners WHERE owner = 'mg_owner'")
        assert stored.fetchone() == (1,)
    assert runner == ("df_run_mg_owner", True, False, False, False, ["mg_owner"])
    status, result = _run(owner, "SELECT current_user::text AS u, session_user::text AS s")
    assert status == "completed", result
    assert result == '{"rows": [{"s": "df_run_mg_owner", "u": "mg_owner"}], "row_count": 1}'
    with psycopg.connect(_through(managed_proxy, ADMIN), autocommit=True) as admin:
        admin.execute("SELECT df.revoke_usage('mg_owner')")
        gone = admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'df_run_mg_owner'")
        assert gone.fetchone() == (0,)


def test_a_new_secret_takes_over_without_manual_steps(
    managed: ManagedCluster, tmp_path: Path
) -> None:
    """The engine re-derives and re-sets runner passwords when the secret changes."""
    managed.create_user("mg_rotate")
    upstream = _own_database(managed, "mg_rotate_db")
    secret = tmp_path / "new-secret"
    secret.write_text("an entirely different runner secret\n")
    proxy = ProxyProcess(
        upstream,
        extra_args=["--secret-file", str(secret)],
        log_path=tmp_path / "pgdurable.log",
    ).start()
    try:
        with psycopg.connect(_through(proxy, ADMIN, "mg_rotate_db"), autocommit=True) as admin:
            admin.execute("SELECT df.grant_usage('mg_rotate')")
        through = _through(proxy, "mg_rotate", "mg_rotate_db")
        assert _run(through, "SELECT 1 AS one")[0] == "completed"
    finally:
        proxy.stop()
    proxy = ProxyProcess(
        upstream,
        extra_args=["--secret-file", str(managed.secret_file)],
        log_path=tmp_path / "pgdurable.log",
    ).start()
    try:
        through = _through(proxy, "mg_rotate", "mg_rotate_db")
        assert _run(through, "SELECT 2 AS two")[0] == "completed"
    finally:
        proxy.stop()


def test_without_a_secret_a_step_says_what_is_missing(
    managed: ManagedCluster, tmp_path: Path
) -> None:
    managed.create_user("mg_nosecret")
    upstream = _own_database(managed, "mg_nosecret_db")
    proxy = ProxyProcess(upstream, log_path=tmp_path / "pgdurable.log").start()
    try:
        with psycopg.connect(_through(proxy, ADMIN, "mg_nosecret_db"), autocommit=True) as admin:
            admin.execute("SELECT df.grant_usage('mg_nosecret')")
        status, error = _run(_through(proxy, "mg_nosecret", "mg_nosecret_db"), "SELECT 1")
    finally:
        proxy.stop()
    assert status == "failed"
    assert (
        error is not None
        and "Failed to connect to database 'mg_nosecret_db' as 'mg_nosecret'" in (error)
    )
    assert "password authentication failed" in error or "password" in error


def test_missing_privileges_name_what_to_grant(managed: ManagedCluster) -> None:
    """The catalog owner needs CREATEROLE, and (PostgreSQL >= 16) ADMIN OPTION on the owner."""
    with psycopg.connect(managed.dsn(ROOT), autocommit=True) as root:
        root.execute("DROP DATABASE IF EXISTS mg_weak WITH (FORCE)")
        root.execute("DROP ROLE IF EXISTS mg_weak_admin")
        root.execute(f"CREATE ROLE mg_weak_admin LOGIN PASSWORD '{user_password('mg_weak_admin')}'")
        root.execute("CREATE DATABASE mg_weak OWNER mg_weak_admin")
        root.execute("CREATE ROLE mg_stranger LOGIN")  # created by the superuser, not the admin
        version = root.execute("SHOW server_version_num").fetchone()
    weak = managed.dsn("mg_weak_admin", "mg_weak")
    install_catalog(weak)
    with psycopg.connect(weak, autocommit=True) as conn:
        conn.execute("INSERT INTO df._settings VALUES ('runner_roles', 'on')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            conn.execute("SELECT df.grant_usage('mg_stranger')")
        assert caught.value.diag.message_primary == (
            'pgdurable: cannot create the runner role "df_run_mg_stranger" for "mg_stranger": '
            'role "mg_weak_admin" lacks CREATEROLE'
        )
        assert caught.value.diag.message_hint is not None
        assert "ALTER ROLE mg_weak_admin CREATEROLE" in caught.value.diag.message_hint
    with psycopg.connect(managed.dsn(ROOT), autocommit=True) as root:
        root.execute("ALTER ROLE mg_weak_admin CREATEROLE")
    with psycopg.connect(weak, autocommit=True) as conn:
        assert version is not None
        if int(version[0]) < 160000:  # CREATEROLE alone may grant any non-superuser role
            conn.execute("SELECT df.grant_usage('mg_stranger')")
            return
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            conn.execute("SELECT df.grant_usage('mg_stranger')")
        assert caught.value.diag.message_primary == (
            'pgdurable: cannot make the runner role "df_run_mg_stranger" a member of '
            '"mg_stranger": role "mg_weak_admin" needs ADMIN OPTION on "mg_stranger"'
        )
        assert caught.value.diag.message_hint is not None
        assert "GRANT mg_stranger TO mg_weak_admin WITH ADMIN OPTION" in (
            caught.value.diag.message_hint
        )
    with psycopg.connect(managed.dsn(ROOT), autocommit=True) as root:
        root.execute("GRANT mg_stranger TO mg_weak_admin WITH ADMIN OPTION")
    with psycopg.connect(weak, autocommit=True) as conn:
        conn.execute("SELECT df.grant_usage('mg_stranger')")
        made = conn.execute("SELECT runner::text FROM df._runners WHERE owner = 'mg_stranger'")
        assert made.fetchone() == ("df_run_mg_stranger",)


def test_a_race_losers_query_is_cancelled_through_the_runner(
    managed: ManagedCluster, managed_proxy: ProxyProcess
) -> None:
    """Cancelling needs the runner's own identity (the backend belongs to the runner)."""
    dsn = _user_with_usage(managed, managed_proxy, "mg_racer")
    graph = "'SELECT pg_sleep(30)' | 'SELECT pg_sleep(0.3), 1 AS fast'"
    assert start_and_await(dsn, graph)[1] == "completed"
    with psycopg.connect(managed.dsn(ROOT), autocommit=True) as root:
        for _ in range(100):
            sleeping = root.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'df_run_mg_racer' "
                "AND query = 'SELECT pg_sleep(30)' AND state = 'active'"
            ).fetchone()
            if sleeping == (0,):
                break
            root.execute("SELECT pg_sleep(0.05)")
    assert sleeping == (0,)


def test_transaction_mode_new_logs_in_through_the_runner(
    managed: ManagedCluster, managed_proxy: ProxyProcess
) -> None:
    dsn = _user_with_usage(managed, managed_proxy, "mg_newtx")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT df.start('SELECT 1', transaction_mode => 'new')").fetchone()
        conn.rollback()
        assert row is not None
    assert await_status(dsn, row[0]) == "completed"


def test_parallel_first_logins_of_a_new_runner_all_succeed(
    managed: ManagedCluster, managed_proxy: ProxyProcess
) -> None:
    """Four branches log in as a runner whose password is not set yet: one sets it."""
    dsn = _user_with_usage(managed, managed_proxy, "mg_parallel")
    graph = "'SELECT 1' & 'SELECT 2' & 'SELECT 3' & 'SELECT 4'"
    assert start_and_await(dsn, graph)[1] == "completed"
