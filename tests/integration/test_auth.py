"""Authentication is relayed byte for byte: trust, md5 and SCRAM through pgdurable."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.clusters import AUTH_ROLES, run_psql
from tests.support.proxy import ProxyProcess


@pytest.mark.parametrize("role", sorted(AUTH_ROLES))
def test_role_logs_in_through_proxy(proxy: ProxyProcess, role: str) -> None:
    _, password = AUTH_ROLES[role]
    with psycopg.connect(proxy.dsn(role, password)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)


@pytest.mark.parametrize("role", ["md5_user", "scram_user"])
def test_wrong_password_gets_the_servers_error(proxy: ProxyProcess, role: str) -> None:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn(role, "wrong-password"))
    assert f'password authentication failed for user "{role}"' in str(info.value)


@pytest.mark.parametrize("role", sorted(AUTH_ROLES))
def test_psql_logs_in_with_password(proxy: ProxyProcess, role: str) -> None:
    _, password = AUTH_ROLES[role]
    result = run_psql(proxy.dsn(role, password), "SELECT 'hello from ' || current_user;", "-At")
    assert result.stdout.strip() == f"hello from {role}"


async def test_asyncpg_scram(proxy: ProxyProcess) -> None:
    import asyncpg

    conn = await asyncpg.connect(proxy.dsn("scram_user", AUTH_ROLES["scram_user"][1]))
    try:
        assert await conn.fetchval("SELECT session_user") == "scram_user"
    finally:
        await conn.close()
