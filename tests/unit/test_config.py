"""Settings parsing: flags, PGDURABLE_* variables and DSN checks."""

from __future__ import annotations

import pytest

from pgdurable_proxy.config import ConfigError, parse_settings
from pgdurable_proxy.dsn import DSNError, parse_dsn


def test_flags_win_over_environment() -> None:
    env = {"PGDURABLE_UPSTREAM": "postgresql://a@h1:5433/d1", "PGDURABLE_PORT": "7000"}
    settings = parse_settings(["--port", "7001"], env)
    assert settings.port == 7001
    assert settings.upstream is not None and settings.upstream.host == "h1"
    assert not settings.embedded


def test_no_upstream_means_embedded() -> None:
    settings = parse_settings([], {})
    assert settings.embedded and settings.port == 6432 and settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "host", "port", "user", "dbname", "sslmode"),
    [
        (
            "postgresql://u:p@db.example:5433/app?sslmode=require",
            "db.example",
            5433,
            "u",
            "app",
            "require",
        ),
        ("postgres://u@[::1]/x", "::1", 5432, "u", "x", "prefer"),
        (
            "host=/var/run/postgresql port=5432 user=me dbname='my db'",
            "/var/run/postgresql",
            5432,
            "me",
            "my db",
            "prefer",
        ),
        ("postgresql://%2Ftmp%2Fsock/d?user=w", "/tmp/sock", 5432, "w", "d", "prefer"),
    ],
)
def test_dsn_forms(text: str, host: str, port: int, user: str, dbname: str, sslmode: str) -> None:
    dsn = parse_dsn(text)
    assert (dsn.host, dsn.port, dsn.user, dsn.dbname, dsn.sslmode) == (
        host,
        port,
        user,
        dbname,
        sslmode,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mysql://x",
        "host=x port=abc",
        "host=x sslmode=nope",
        "postgresql://h:99999/d",
        "host=x bogus=1",
    ],
)
def test_bad_dsns(text: str) -> None:
    with pytest.raises(DSNError):
        parse_dsn(text)


def test_tls_flags_go_together() -> None:
    with pytest.raises(ConfigError):
        parse_settings(["--tls-cert", __file__], {})


def test_http_flags_and_defaults() -> None:
    defaults = parse_settings([], {}).http
    assert defaults.allow == () and defaults.max_timeout == 300
    assert defaults.max_request_bytes == defaults.max_response_bytes == 10 * 1024 * 1024
    assert defaults.max_redirects == 5
    env = {"PGDURABLE_HTTP_ALLOW": "127.0.0.1:8080,10.0.0.0/8", "PGDURABLE_HTTP_MAX_TIMEOUT": "9"}
    http = parse_settings(["--http-max-redirects", "0", "--http-max-response-bytes", "5"], env).http
    assert len(http.allow) == 2 and http.allow[0].port == 8080
    assert (http.max_timeout, http.max_redirects, http.max_response_bytes) == (9, 0, 5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--http-allow", "127.0.0.1:0"], "bad --http-allow entry '127.0.0.1:0'"),
        (["--http-max-timeout", "0"], "--http-max-timeout must be positive"),
        (["--http-max-request-bytes", "-1"], "--http-max-request-bytes must be positive"),
        (["--http-max-redirects", "-1"], "--http-max-redirects cannot be negative"),
    ],
)
def test_bad_http_flags(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(argv, {})


def test_connection_limits_flags_and_environment() -> None:
    defaults = parse_settings([], {})
    assert (defaults.authentication_timeout, defaults.max_client_connections) == (60.0, 1000)
    env = {"PGDURABLE_AUTHENTICATION_TIMEOUT": "5", "PGDURABLE_MAX_CLIENT_CONNECTIONS": "20"}
    settings = parse_settings([], env)
    assert (settings.authentication_timeout, settings.max_client_connections) == (5.0, 20)
    flags = parse_settings(["--authentication-timeout", "0.5", "--max-client-connections", "3"])
    assert (flags.authentication_timeout, flags.max_client_connections) == (0.5, 3)


@pytest.mark.parametrize(
    "argv",
    [["--authentication-timeout", "0"], ["--max-client-connections", "0"]],
)
def test_bad_connection_limits(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match=argv[0]):
        parse_settings(argv, {})


def test_max_result_bytes_flag_environment_and_default() -> None:
    assert parse_settings([], {}).max_result_bytes == 64 * 1024 * 1024
    assert parse_settings([], {"PGDURABLE_MAX_RESULT_BYTES": "1000"}).max_result_bytes == 1000
    env = {"PGDURABLE_MAX_RESULT_BYTES": "1000"}
    assert parse_settings(["--max-result-bytes", "5"], env).max_result_bytes == 5
    with pytest.raises(ConfigError, match="--max-result-bytes must be positive"):
        parse_settings(["--max-result-bytes", "0"], {})


def test_step_idle_timeout_flag_environment_and_default() -> None:
    assert parse_settings([], {}).step_idle_timeout == 4
    env = {"PGDURABLE_STEP_IDLE_TIMEOUT": "0.5"}
    assert parse_settings([], env).step_idle_timeout == 0.5
    assert parse_settings(["--step-idle-timeout", "30"], env).step_idle_timeout == 30
    with pytest.raises(ConfigError, match="--step-idle-timeout must be positive"):
        parse_settings(["--step-idle-timeout", "0"], {})


def test_pg_durable_0_2_8_settings_default_as_pg_durable_and_are_checked() -> None:
    settings = parse_settings([], {})
    assert settings.execution_acquire_timeout == 30
    assert not settings.log_workflow_sql and not settings.http_disable
    assert settings.http.enabled
    flags = ["--execution-acquire-timeout", "3600", "--log-workflow-sql", "--http-disable"]
    settings = parse_settings(flags, {})
    assert settings.execution_acquire_timeout == 3600 and settings.log_workflow_sql
    assert settings.http_disable and not settings.http.enabled
    settings = parse_settings([], {"PGDURABLE_HTTP_DISABLE": "on"})
    assert not settings.http.enabled
    for bad in ("0", "3601"):
        with pytest.raises(ConfigError, match="between 1 and 3600"):
            parse_settings(["--execution-acquire-timeout", bad], {})


def test_retention_flags_default_as_pg_durable_and_are_checked() -> None:
    settings = parse_settings([], {})
    assert (settings.retention_days, settings.reconcile_interval) == (30, 3600)
    assert settings.retention_max_instances == 10_000  # pg_durable's fixed cap
    flags = ["--retention-days", "0", "--reconcile-interval", "0"]
    settings = parse_settings([*flags, "--retention-max-instances", "0"], {})
    assert (settings.retention_days, settings.reconcile_interval) == (0, 0)
    assert settings.retention_max_instances == 0
    env = {"PGDURABLE_RETENTION_MAX_INSTANCES": "7"}
    assert parse_settings([], env).retention_max_instances == 7
    for argv, message in (
        (["--retention-days", "36501"], "--retention-days"),
        (["--reconcile-interval", "86401"], "--reconcile-interval"),
        (["--retention-max-instances", "-1"], "--retention-max-instances cannot be negative"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_settings(argv, {})
