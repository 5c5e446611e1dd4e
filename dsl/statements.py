"""Split an SQL step's text into its statements with PostgreSQL's own parser (pglast).

A step may hold several statements (pg_durable's result is the last one's). The engine
runs those before the last as one simple query, as written, and the last one prepared, for
its rows: it only needs to know where the last statement starts, and whether any of them
begins or ends a transaction (which a step's own transaction cannot hold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pglast import parser

# TransactionStmt kinds that begin or end a transaction (SAVEPOINT, RELEASE and ROLLBACK TO
# stay inside one)
TRANSACTION_BOUNDARIES = frozenset(
    {
        "TRANS_STMT_BEGIN",
        "TRANS_STMT_START",
        "TRANS_STMT_COMMIT",
        "TRANS_STMT_ROLLBACK",
        "TRANS_STMT_PREPARE",
        "TRANS_STMT_COMMIT_PREPARED",
        "TRANS_STMT_ROLLBACK_PREPARED",
    }
)


@dataclass(frozen=True, slots=True)
class SplitStep:
    """A step text of more than one statement: the text before the last statement (as
    written), the last statement, and whether a statement begins or ends a transaction."""

    before: str
    last: str
    controls_transaction: bool


def split_step(sql: str) -> SplitStep | None:
    """`sql` split before its last statement; None for a single statement, and for a text
    that does not parse (PostgreSQL then reports why when it runs)."""
    if ";" not in sql:  # the usual step: no parse needed
        return None
    try:
        statements = json.loads(parser.parse_sql_json(sql))["stmts"]
    except parser.ParseError:
        return None
    if len(statements) < 2:
        return None
    encoded = sql.encode()
    last = statements[-1]
    start = int(last.get("stmt_location", 0))
    length = int(last.get("stmt_len", 0)) or len(encoded) - start
    return SplitStep(
        before=encoded[:start].decode(),
        last=encoded[start : start + length].decode(),
        controls_transaction=any(
            s["stmt"].get("TransactionStmt", {}).get("kind") in TRANSACTION_BOUNDARIES
            for s in statements
        ),
    )
