"""Bad workflow input: clear ErrorResponses with SQLSTATEs (and positions), server unharmed."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support.clusters import run_psql
from tests.support.proxy import ProxyProcess


def _error(dsn: str, sql: str, *params: object) -> psycopg.Error:
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute(sql, params or None)
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)
    return info.value


def test_step_syntax_error_has_a_position_in_the_users_statement(wf_dsn: str) -> None:
    sql = "SELECT df.start('SELECT 1' ~> 'SELEC 2')"
    error = _error(wf_dsn, sql)
    assert error.sqlstate == "42601"
    assert error.diag.message_primary == 'syntax error at or near "SELEC"'
    assert error.diag.statement_position == str(sql.index("SELEC 2") + 1)
    assert error.diag.column_name is None


def test_step_syntax_error_aborts_the_transaction_like_a_server_error(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELECT df.start($$SELECT 1 FRM t$$, 'x')")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_step_syntax_error_with_parameters_extended_protocol(wf_dsn: str) -> None:
    sql = "SELECT df.start('SELECT 1 FRM t' ~> %s)"
    error = _error(wf_dsn, sql, "SELECT 2")
    assert error.sqlstate == "42601"
    assert error.diag.statement_position == str(sql.index("t'") + 1)


def test_psql_shows_the_caret(proxy: ProxyProcess, wf_dsn: str) -> None:
    result = run_psql(wf_dsn, "SELECT df.start('SELECT 1' ~> 'SELEC 2');\n", check=False)
    assert 'ERROR:  syntax error at or near "SELEC"' in result.stderr
    assert "LINE 1: SELECT df.start('SELECT 1' ~> 'SELEC 2');" in result.stderr
    caret_line = result.stderr.splitlines()[2]
    assert caret_line.index("^") == len("LINE 1: ") + len("SELECT df.start('SELECT 1' ~> '")


def _chain(depth: int) -> str:
    node = {"node_type": "SQL", "query": "SELECT 1"}
    for _ in range(depth - 1):
        node = {
            "node_type": "THEN",
            "left_node": node,
            "right_node": {"node_type": "SQL", "query": "SELECT 2"},
        }
    return json.dumps(node)


def _wide(nodes: int) -> str:
    """A JOIN tree of `nodes` leaves... balanced, so it is shallow."""
    leaves = [{"node_type": "SQL", "query": f"SELECT {i}"} for i in range(nodes)]
    while len(leaves) > 1:
        pairs = [
            {"node_type": "JOIN", "left_node": leaves[i], "right_node": leaves[i + 1]}
            for i in range(0, len(leaves) - 1, 2)
        ]
        leaves = pairs + ([leaves[-1]] if len(leaves) % 2 else [])
    return json.dumps(leaves[0])


@pytest.mark.parametrize(
    ("sql", "params", "sqlstate", "text"),
    [
        (
            "SELECT df.start(%s)",
            (_chain(258),),
            "54001",
            "Graph exceeds maximum nesting depth of 256",
        ),
        (
            "SELECT df.start(%s)",
            (_wide(5001),),
            "54000",
            "Workflow exceeds maximum node count of 10000",
        ),
        (
            'SELECT df.start(\'{"node_type":"NOPE"}\')',
            (),
            "22023",
            "Invalid durable function: Unknown node_type 'NOPE'. Valid types: SQL, THEN, IF, JOIN, "
            "LOOP, BREAK, RACE, SLEEP, WAIT_SCHEDULE, HTTP, HTTP_MULTIPART, SIGNAL, RETRY, "
            "TIMEOUT, COMPENSATED",
        ),
        (
            "SELECT df.start('SELECT 1', database => 'no_such_db')",
            (),
            "3D000",
            'database "no_such_db" does not exist',
        ),
        (
            "SELECT df.start('SELECT 1', transaction_mode => 'sideways')",
            (),
            "22023",
            "invalid transaction_mode \"sideways\" for df.start(): expected 'caller' or 'new'",
        ),
        (
            "SELECT df.as('SELECT 1', '1bad')",
            (),
            "22023",
            "df.as: result name '1bad' is not a valid identifier — must match "
            "[a-zA-Z_][a-zA-Z0-9_]*",
        ),
        ("SELECT df.as('SELECT 1', '')", (), "22023", "df.as: result name cannot be empty"),
        ("SELECT df.sleep(-1)", (), "22023", "Sleep duration must be non-negative"),
        ("SELECT df.wait_for_signal('')", (), "22023", "Signal name cannot be empty"),
        ("SELECT df.wait_for_signal('s', 0)", (), "22023", "Timeout must be positive"),
        (
            "SELECT ('SELECT 1' ~> 'SELECT 2') !> 'SELECT 3'",
            (),
            None,
            "Invalid if-then-else: left side of !> must be a ?> expression",
        ),
        (
            "SELECT * FROM df.list_instances(NULL, 10, NULL, 'zz')",
            (),
            "22023",
            "df.list_instances: invalid after_cursor",
        ),
        ("SELECT * FROM df.list_instances(NULL, 0)", (), "22023", "limit_count must be at least 1"),
        (
            "SELECT * FROM df.list_instances(NULL, 5000)",
            (),
            "22023",
            "exceeds pg_durable.list_instances_max_limit (1000)",
        ),
        (
            "SELECT df.cancel('deadbeef')",
            (),
            "42704",
            "Instance not found or access denied: deadbeef",
        ),
        ("SELECT df.await_instance('deadbeef', 1)", (), "42704", "Instance not found: deadbeef"),
        ("SELECT df.await_instance('deadbeef', 0)", (), "22023", "Timeout must be positive"),
        (
            "SELECT * FROM df.instance_executions('deadbeef', 0)",
            (),
            "22023",
            "limit_count must be at least 1",
        ),
    ],
)
def test_error_texts(
    wf_dsn: str, sql: str, params: tuple[object, ...], sqlstate: str | None, text: str
) -> None:
    error = _error(wf_dsn, sql, *params)
    assert text in str(error)
    if sqlstate is not None:
        assert error.sqlstate == sqlstate


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT df.status('deadbeef')",
        "SELECT df.result('deadbeef')",
        "SELECT df.status(NULL)",
        "SELECT df.result(NULL)",
        "SELECT df.sql(NULL)",
        "SELECT df.seq('SELECT 1', NULL)",
    ],
)
def test_unknown_ids_and_nulls_give_null(wf_dsn: str, sql: str) -> None:
    with psycopg.connect(wf_dsn) as conn:
        assert conn.execute(sql).fetchone() == (None,)


def test_no_rows_written_by_a_failed_start(wf_dsn: str) -> None:
    with psycopg.connect(wf_dsn, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM df.instances").fetchone()
        for bad in (_chain(300), '{"node_type":"THEN"}'):
            with pytest.raises(psycopg.Error):
                conn.execute("SELECT df.start(%s)", (bad,))
        assert conn.execute("SELECT count(*) FROM df.instances").fetchone() == before


def test_invalid_cron_gets_the_position_of_its_literal(wf_dsn: str) -> None:
    sql = "SELECT df.start('SELECT 1' ~> df.wait_for_schedule('61 * * * *'))"
    error = _error(wf_dsn, sql)
    assert error.sqlstate == "22023"
    assert str(error.diag.message_primary).startswith("Invalid cron expression '61 * * * *'")
    assert error.diag.statement_position == str(sql.index("'61") + 1)


def _sql(n: int, **extra: object) -> dict[str, object]:
    return {"node_type": "SQL", "query": f"SELECT {n}", **extra}


# Graphs with a wrong node, and where df.start says it is: the first one in pre-order
# (a node, then its left, right and condition subtrees, then extra_nodes in order).
GRAPH_PROBLEMS = [
    (
        {
            "node_type": "THEN",
            "left_node": {
                "node_type": "THEN",
                "left_node": _sql(1),
                "right_node": _sql(2, left_node=_sql(3)),
            },
            "right_node": {"node_type": "THEN", "left_node": _sql(4)},
        },
        "root.left.right: SQL nodes cannot have children",
    ),
    (
        {
            "node_type": "IF",
            "left_node": _sql(1),
            "right_node": _sql(2),
            "condition_node": {"node_type": "THEN", "left_node": _sql(3)},
        },
        "root.condition_node: THEN node requires left_node and right_node",
    ),
    (
        {
            "node_type": "JOIN",
            "left_node": _sql(1),
            "right_node": {"node_type": "RACE", "left_node": _sql(2), "right_node": _sql(3)},
            "extra_nodes": [_sql(4), {"node_type": "SLEEP"}, {"node_type": "BREAK"}],
        },
        "root.extra_nodes[1]: SLEEP node requires a query",
    ),
    (
        {"node_type": "LOOP", "left_node": _sql(1), "right_node": _sql(2)},
        "root: right_node is not valid for LOOP nodes",
    ),
    # a child that is missing, not malformed (reported by the catalog's CHECK before 0017)
    (
        {"node_type": "THEN", "left_node": _sql(1)},
        "root: THEN node requires left_node and right_node",
    ),
    (
        {"node_type": "JOIN", "left_node": _sql(1), "right_node": {"node_type": "RACE"}},
        "root.right: RACE node requires left_node and right_node",
    ),
    ({"node_type": "LOOP"}, "root: LOOP node requires left_node (the body)"),
    (
        {"node_type": "IF", "left_node": _sql(1), "right_node": _sql(2)},
        "root: IF node requires a condition_node or a condition config in query",
    ),
    # beside a first-class condition_node or extra_nodes, a query is still a JSON config
    # object (pg_durable 0.2.6)
    (
        {
            "node_type": "THEN",
            "left_node": _sql(1),
            "right_node": {
                "node_type": "IF",
                "left_node": _sql(2),
                "right_node": _sql(3),
                "condition_node": _sql(4),
                "query": "SELECT 1",
            },
        },
        "root.right: query in IF must be valid JSON config: invalid input syntax for type json",
    ),
    (
        {"node_type": "LOOP", "left_node": _sql(1), "condition_node": _sql(2), "query": "[1]"},
        "root: query in LOOP must be a JSON config object",
    ),
    (
        {
            "node_type": "JOIN",
            "left_node": _sql(1),
            "right_node": _sql(2),
            "extra_nodes": [_sql(3)],
            "query": '"x"',
        },
        "root: query in JOIN must be a JSON config object",
    ),
    # a malformed child: deserialized one level at a time, named by its path (pg_durable 0.2.6)
    (
        {
            "node_type": "IF",
            "left_node": _sql(1),
            "right_node": _sql(2),
            "condition_node": {"query": "SELECT true"},
        },
        "root.condition_node: failed to deserialize Durofut child: missing field `node_type`",
    ),
    (
        {
            "node_type": "THEN",
            "left_node": {"node_type": "THEN", "left_node": _sql(1), "right_node": "SELECT 2"},
            "right_node": _sql(3),
        },
        "root.left: failed to deserialize Durofut child: Durofut children must be JSON objects",
    ),
    (
        {
            "node_type": "THEN",
            "left_node": {"node_type": "THEN", "left_node": _sql(1), "right_node": {"query": 2}},
            "right_node": {"node_type": "THEN"},
        },
        "root.left.right: failed to deserialize Durofut child: missing field `node_type`",
    ),
    (
        {
            "node_type": "JOIN",
            "left_node": _sql(1),
            "right_node": _sql(2),
            "extra_nodes": [_sql(3), {"node_type": "SQL", "query": 4}],
        },
        "root.extra_nodes[1]: failed to deserialize Durofut child: invalid type: integer `4`,"
        " expected a string",
    ),
    (
        {
            "node_type": "LOOP",
            "left_node": {
                "node_type": "JOIN",
                "left_node": _sql(1),
                "right_node": _sql(2),
                "extra_nodes": {},
            },
        },
        "root.left: failed to deserialize Durofut child: invalid type: map, expected a sequence",
    ),
    # what is wrong first in pre-order is reported, malformed or not
    (
        {
            "node_type": "THEN",
            "left_node": {"node_type": "SLEEP"},
            "right_node": {"node_type": "SQL", "result_name": False},
        },
        "root.left: SLEEP node requires a query",
    ),
]


@pytest.mark.parametrize(("graph", "where"), GRAPH_PROBLEMS)
def test_a_graph_problem_names_the_first_wrong_node_by_its_path(
    wf_dsn: str, graph: dict[str, object], where: str
) -> None:
    error = _error(wf_dsn, "SELECT df.start(%s)", json.dumps(graph))
    assert error.sqlstate == "22023"
    assert error.diag.message_primary == f"Invalid durable function graph: {where}"


def test_the_root_is_depth_0_and_only_depth_over_256_is_refused(wf_dsn: str) -> None:
    """As pg_durable 0.2.6: a chain whose deepest leaf is at depth 256 starts; one level more
    is refused, naming the first node in pre-order that is too deep."""
    with psycopg.connect(wf_dsn) as conn:  # validated, then rolled back: nothing runs
        assert conn.execute("SELECT df.start(%s)", (_chain(257),)).fetchone() is not None
        conn.rollback()
    error = _error(wf_dsn, "SELECT df.start(%s)", _chain(258))
    assert error.sqlstate == "54001"
    assert error.diag.message_primary == (
        "Invalid durable function graph: root" + ".left" * 257 + ": Graph exceeds maximum"
        " nesting depth of 256. Simplify the workflow or break it into multiple instances."
    )


def test_too_deep_is_reported_before_a_wrong_node(wf_dsn: str) -> None:
    deep = json.loads(_chain(257))
    graph = {"node_type": "THEN", "left_node": _sql(1, right_node=_sql(2)), "right_node": deep}
    error = _error(wf_dsn, "SELECT df.start(%s)", json.dumps(graph))
    assert error.sqlstate == "54001"


def test_a_hand_written_graph_is_read_as_serde_reads_it(wf_dsn: str) -> None:
    """JSON nulls, unknown keys and an empty extra_nodes are ignored at every level."""
    graph = {
        "node_type": "THEN",
        "left_node": _sql(1, result_name=None, comment="ignored"),
        "right_node": {
            "node_type": "IF",
            "query": None,
            "left_node": _sql(2, extra_nodes=[]),
            "right_node": {"node_type": "LOOP", "left_node": _sql(3), "condition_node": None},
            "condition_node": _sql(4),
            "extra_nodes": None,
        },
    }
    with psycopg.connect(wf_dsn) as conn:  # validated, then rolled back: nothing runs
        row = conn.execute("SELECT df.start(%s)", (json.dumps(graph),)).fetchone()
        assert row is not None
        rows = conn.execute(
            "SELECT node_type, query, result_name, left_node IS NULL, right_node IS NULL"
            " FROM df.nodes WHERE instance_id = %s ORDER BY node_type, query",
            row,
        ).fetchall()
        conn.rollback()
    condition = rows[0][1]
    assert rows == [
        ("IF", condition, None, False, False),
        ("LOOP", None, None, False, True),
        ("SQL", "SELECT 1", None, True, True),
        ("SQL", "SELECT 2", None, True, True),
        ("SQL", "SELECT 3", None, True, True),
        ("SQL", "SELECT 4", None, True, True),
        ("THEN", None, None, False, False),
    ]
    assert list(json.loads(condition)) == ["condition_node"]


def test_a_reference_no_step_defines_fails_df_start_at_its_position(wf_dsn: str) -> None:
    sql = "SELECT df.start('SELECT 1' |=> 'one' ~> 'SELECT ''é'', $one, $nope.x')"
    error = _error(wf_dsn, sql)
    assert error.sqlstate == "42601"
    assert str(error.diag.message_primary).startswith(
        'unknown named result "$nope": no step of this workflow is named "nope"'
    )
    assert error.diag.statement_position == str(sql.index("$nope") + 1)
    sql = "SELECT df.start(df.as('SELECT 1', 'a') ~> df.sql($$SELECT $a.*, $b$$), 'label')"
    error = _error(wf_dsn, sql)
    assert error.sqlstate == "42601" and '"$b"' in str(error.diag.message_primary)
    assert error.diag.statement_position == str(sql.index("$b") + 1)


@pytest.mark.parametrize(
    ("graph", "params"),
    [
        ("'SELECT 1' ~> 'SELECT $nope?, $nope.x? AS y'", ()),  # optional
        ("'SELECT ''$nope'', format(''%1$s'', 1) -- $nope'", ()),  # not SQL code
        ("'SELECT $later' ~> 'SELECT 2' |=> 'later'", ()),  # some step has that name
        ("'SELECT 1' |=> %s ~> 'SELECT $n'", ("n",)),  # names not known from the statement
        ("%s::text ~> 'SELECT $n'", ('{"node_type":"SQL","query":"SELECT 1","result_name":"n"}',)),
        ("'SELECT {v}, $n'", ()),  # a variable's text could change what $n is
    ],
)
def test_references_that_may_bind_or_are_optional_start(
    wf_dsn: str, graph: str, params: tuple[str, ...]
) -> None:
    with psycopg.connect(wf_dsn) as conn:  # started, then rolled back: nothing runs
        assert conn.execute(f"SELECT df.start({graph})", params or None).fetchone() is not None
        conn.rollback()
