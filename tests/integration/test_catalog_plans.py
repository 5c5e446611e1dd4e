"""The catalog's hot paths keep their plans: no LANGUAGE sql function that PostgreSQL
cannot inline runs when a workflow starts. Such a function (a FROM or a subquery in its
body, or a body less immutable than its declaration) is parsed and planned again at every
call, where PL/pgSQL keeps its plans for the session; at five calls a workflow that was a
tenth of PostgreSQL's time.
"""

from __future__ import annotations

import psycopg
import pytest

from pgdurable_proxy.cluster import Cluster
from tests.support.catalog import engine_presence

ROLE = "plans_user"
# the SQL-language functions that ran in this transaction (pg_stat_xact_user_functions
# counts a function only when it was called, not inlined)
CALLED_SQL_FUNCTIONS = """
    SELECT p.oid::regprocedure::text FROM pg_stat_xact_user_functions s
    JOIN pg_proc p ON p.oid = s.funcid JOIN pg_language l ON l.oid = p.prolang
    WHERE l.lanname = 'sql' ORDER BY 1
"""


@pytest.mark.parametrize(
    "fut",
    [
        "'SELECT 1' ~> 'SELECT 2'",  # the DSL's operators
        """'{"node_type": "SQL", "query": "SELECT 1"}'""",  # Durofut JSON, parsed in SQL
    ],
)
def test_a_start_calls_no_function_planned_at_every_call(
    catalog_dsn: str, cluster: Cluster, fut: str
) -> None:
    with engine_presence(catalog_dsn), psycopg.connect(catalog_dsn, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            admin.execute(f"CREATE ROLE {ROLE} LOGIN")
            admin.execute("SELECT df.grant_usage(%s)", (ROLE,))
            admin.execute(f"ALTER ROLE {ROLE} SET track_functions = 'all'")
        with psycopg.connect(catalog_dsn.replace("postgres@", f"{ROLE}@", 1)) as conn:
            # PL/pgSQL plans an expression with the values of its variables for the first
            # five calls (folding an immutable function of constants, df._node_types(),
            # each time), then keeps a generic plan: the seventh start is measured
            for _ in range(6):
                conn.execute(f"SELECT df.start({fut})")
                conn.rollback()
            conn.execute(f"SELECT df.start({fut})")
            called = [row[0] for row in conn.execute(CALLED_SQL_FUNCTIONS)]
            conn.rollback()
    assert called == []
