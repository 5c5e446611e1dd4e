"""Split an SQL step's text into its statements with PostgreSQL's own parser (pglast).

A step may hold several statements (pg_durable's result is the last one's). The engine
runs those before the last as one simple query, as written, and the last one prepared, for
its rows: it only needs to know where the last statement starts, and whether any of them
begins or ends a transaction (which a step's own transaction cannot hold).
"""

from __future__ import annotations

import json
import re
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


# the first keyword of every statement in TRANSACTION_BOUNDARIES
_TRANSACTION_WORDS = frozenset({"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "PREPARE"})
_FIRST_WORD = re.compile(r"([A-Za-z]+)")


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
    try:  # statement boundaries only, at C speed (a parse tree of a large text costs 30x)
        slices = parser.split(sql, True, True)
    except parser.ParseError:
        return None
    if len(slices) < 2:
        return None
    last = slices[-1]
    return SplitStep(
        before=sql[: last.start],
        last=sql[last],
        controls_transaction=any(_bounds_transaction(sql[s]) for s in slices),
    )


def _bounds_transaction(statement: str) -> bool:
    """Does this one statement begin or end a transaction? Only a statement that starts
    with one of their keywords is parsed to find out."""
    first = _FIRST_WORD.match(statement)
    if first is None or first.group(1).upper() not in _TRANSACTION_WORDS:
        return False
    parsed = json.loads(parser.parse_sql_json(statement))["stmts"]
    kind = parsed[0]["stmt"].get("TransactionStmt", {}).get("kind") if parsed else None
    return kind in TRANSACTION_BOUNDARIES
