"""pgJDBC through pgdurable: Statement, PreparedStatement past prepareThreshold, batches,
transactions, errors, fetch size, LISTEN/NOTIFY, cancel and SCRAM login.

All cases run in one JVM per PostgreSQL flavor (tests/clients/java/JdbcMatrix.java, started
as a single-file source program, so no javac and no class files in the tree); each test
below asserts on that run's report.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.acceptance.client_matrix import MatrixRun, login_args, run_matrix
from tests.support.proxy import ProxyProcess

PGJDBC_VERSION = "42.7.13"
JAR = Path(
    os.environ.get(
        "PGJDBC_JAR",
        Path.home()
        / ".m2/repository/org/postgresql/postgresql"
        / PGJDBC_VERSION
        / f"postgresql-{PGJDBC_VERSION}.jar",
    )
)
SOURCE = Path(__file__).resolve().parents[1] / "clients" / "java" / "JdbcMatrix.java"


@pytest.fixture(scope="module")
def jdbc(proxy: ProxyProcess, tmp_path_factory: pytest.TempPathFactory) -> MatrixRun:
    """One run of JdbcMatrix against the proxy of the current flavor."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("no `java` on PATH: the pgJDBC acceptance tests need a JDK >= 11")
    if not JAR.is_file():
        pytest.skip(f"pgJDBC jar not found at {JAR} (set PGJDBC_JAR to use another)")
    workdir = tmp_path_factory.mktemp("jdbc")
    cmd = [
        java,
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        str(JAR),
        str(SOURCE),
        str(proxy.port),
        *login_args(),
    ]
    return run_matrix(cmd, cwd=workdir, timeout=120)


def test_every_case_passed(jdbc: MatrixRun) -> None:
    jdbc.assert_clean()
    assert jdbc.values["driver"] == PGJDBC_VERSION


def test_scram_login_and_auth_matrix(jdbc: MatrixRun) -> None:
    auth = jdbc.case("auth")
    assert auth["scram_user"] == "scram_user/scram_user"
    assert auth["md5_user"] == "md5_user/md5_user"
    assert auth["trust_user"] == "trust_user/trust_user"
    assert auth["wrong_password.sqlstate"] == "28P01"


def test_plain_statement(jdbc: MatrixRun) -> None:
    st = jdbc.case("statement")
    assert st["row"] == "1|x|null|2.5|ünï"
    assert st["multi"] == "1,2"
    assert st["big"] == "20000/200010000/4000000"


def test_prepared_statement_crosses_prepare_threshold(jdbc: MatrixRun) -> None:
    """Values stay right on every run: unnamed, then named `S_n`, then binary results."""
    prep = jdbc.case("prepared")
    assert prep["threshold"] == "5"
    named = [int(n) for n in prep["named_on_server"].split(",")]
    binary = [int(b) for b in prep["binary_results"].split(",")]
    assert len(named) == len(binary) == 10
    # No named statement at first, one server-side statement once past the threshold.
    assert named[0] == 0 and named[-1] == 1 and named == sorted(named), named
    # Text results at first, binary results (no Describe) on the later runs.
    assert binary[0] == 0 and binary[-1] == 1 and binary == sorted(binary), binary
    assert binary.count(1) >= 3, binary
    # A second PreparedStatement with the same SQL reuses the cached server statement.
    assert prep["reuse_named_on_server"] == "1"


def test_batch_insert(jdbc: MatrixRun) -> None:
    batch = jdbc.case("batch")
    assert batch["counts_len"] == "1000"
    assert batch["counts_one"] == "1000"
    assert batch["statement_counts"] == "[1, 1, 10]"
    assert batch["table"] == "1002/502503/10"


def test_autocommit_off_commit_and_rollback(jdbc: MatrixRun) -> None:
    assert jdbc.case("tx")["rows"] == "1,2"
    assert jdbc.case("savepoint")["rows"] == "1,3"


def test_error_mid_transaction_then_rollback(jdbc: MatrixRun) -> None:
    err = jdbc.case("error_tx")
    assert err["first"] == "22012"
    assert err["second"] == "25P02"
    assert err["rows_after_rollback"] == "0"


def test_error_on_server_prepared_statement(jdbc: MatrixRun) -> None:
    assert jdbc.case("error_prepared")["results"] == "100,50,25,20,10,5,4,2,25,33"


def test_error_in_batch(jdbc: MatrixRun) -> None:
    err = jdbc.case("error_batch")
    assert err["sqlstate"] == "23505"
    # The batch runs as one implicit transaction (one Sync): nothing of it is kept.
    assert err["rows"] == "0"


def test_fetch_size_suspends_portal(jdbc: MatrixRun) -> None:
    assert jdbc.case("fetch")["rows"] == "10000/50005000"


def test_listen_notify(jdbc: MatrixRun) -> None:
    assert jdbc.case("notify")["payload"] == "jdbc_matrix:hello through the relay"


def test_query_timeout_cancels_through_proxy(jdbc: MatrixRun) -> None:
    cancel = jdbc.case("cancel")
    assert cancel["sqlstate"] == "57014"
    assert int(cancel["elapsed_ms"]) < 6000
