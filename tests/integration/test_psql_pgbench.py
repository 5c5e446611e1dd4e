"""psql and pgbench, the reference C clients, through pgdurable."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.clusters import pgbench_path, psql_path, run_psql
from tests.support.proxy import ProxyProcess


def test_psql_session(proxy: ProxyProcess) -> None:
    script = """
\\set ON_ERROR_STOP on
CREATE TEMP TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 1000) g;
SELECT count(*), min(id), max(id) FROM t;
\\copy t TO STDOUT
BEGIN;
SAVEPOINT s1;
SELECT 1/0;
"""
    result = run_psql(proxy.dsn(), script, "-At", check=False)
    assert "1000|1|1000" in result.stdout
    assert result.stdout.count("\n") >= 1001
    assert "division by zero" in result.stderr
    ok = run_psql(proxy.dsn(), "SELECT 'ok';", "-At")
    assert ok.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def pgbench_db(proxy: ProxyProcess) -> str:
    dsn = proxy.dsn()
    subprocess.run(
        [str(pgbench_path()), "-i", "-s", "1", "-q", dsn],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return dsn


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only(pgbench_db: str, mode: str) -> None:
    result = subprocess.run(
        [str(pgbench_path()), "-n", "-S", "-T", "2", "-c", "4", "-j", "2", "-M", mode, pgbench_db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    assert failed is not None and failed.group(1) == "0"
    tps = re.search(r"tps = ([\d.]+)", result.stdout)
    assert tps is not None and float(tps.group(1)) > 100


def test_create_extension_pg_durable_answers_create_extension(proxy: ProxyProcess) -> None:
    """The catalog is pgdurable's: CREATE EXTENSION pg_durable never reaches PostgreSQL as
    such, and psql shows its tag, not the DO block's that checks the catalog is there."""
    script = (
        "CREATE EXTENSION pg_durable;\n"
        "SET client_min_messages = error;\n"
        "CREATE EXTENSION IF NOT EXISTS pg_durable WITH SCHEMA df CASCADE;\n"
        "RESET client_min_messages;\n"
        "BEGIN;\n"
        "CREATE EXTENSION pg_durable;\n"
        "SHOW client_min_messages;\n"
        "COMMIT;\n"
    )
    command = [str(psql_path()), proxy.dsn(), "-X", "-At", "-v", "ON_ERROR_STOP=1"]
    result = subprocess.run(command, input=script, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "CREATE EXTENSION",
        "SET",
        "CREATE EXTENSION",
        "RESET",
        "BEGIN",
        "CREATE EXTENSION",
        "notice",  # the session's message level is as it was
        "COMMIT",
    ]
    # several statements in one Query: only the extension's tag changes
    many = "SELECT 1 AS one; CREATE EXTENSION pg_durable; DO $$BEGIN END$$"
    result = subprocess.run([*command, "-c", many], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == ["1", "CREATE EXTENSION", "DO"]
