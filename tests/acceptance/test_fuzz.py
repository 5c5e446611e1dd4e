"""Fuzzing the classifier and the relay: mutated DSL statements through pgdurable.

Every statement runs in a transaction that is rolled back, so a fuzzed df.start never
starts a workflow. What must hold for each: the connection survives, an error the client
gets carries a SQLSTATE, and pgdurable logs no traceback.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import psycopg

from tests.support.proxy import ProxyProcess

# A longer or different run: PGDURABLE_FUZZ_SEED=7 PGDURABLE_FUZZ_STATEMENTS=20000 pytest ...
SEED = int(os.environ.get("PGDURABLE_FUZZ_SEED", "20261202"))
STATEMENTS = int(os.environ.get("PGDURABLE_FUZZ_STATEMENTS", "2000"))
TIME_BUDGET = 50.0 * STATEMENTS / 2000  # seconds; ~10 s on the project machine

CORPUS = [
    "SELECT 'SELECT 1' ~> 'SELECT 2'",
    "SELECT df.explain('SELECT 1' ~> 'SELECT 2' |=> 'n' ~> 'SELECT $n.x')",
    "SELECT ('SELECT 1' & 'SELECT 2') | 'SELECT 3'",
    "SELECT df.explain(('SELECT true' ?> 'SELECT 1') !> 'SELECT 2')",
    "SELECT @> ('SELECT 1' ~> df.break())",
    "SELECT df.sql($$SELECT 'a' AS b$$)",
    "SELECT df.seq(df.sql('SELECT 1'), df.sql('SELECT 2'))",
    "SELECT df.start('SELECT 1' ~> 'SELECT 2', 'fuzz')",
    "SELECT df.start($q$SELECT 'x' AS y$q$ |=> 'r' ~> 'SELECT $r.y', label => 'fuzz')",
    "SELECT df.start(fut => 'SELECT {v}' ~> 'SELECT $r?', label => 'fuzz')",
    "SELECT df.explain(df.join('SELECT 1', 'SELECT 2'))",
    "SELECT df.start(df.wait_for_schedule('*/5 * * * *') ~> 'SELECT 1')",
    "SELECT df.explain(df.if_rows('SELECT 1 WHERE false', 'SELECT 2', 'SELECT 3'))",
    "SELECT df.start(E'SELECT \\'a\\'' ~> U&'SELECT 1', 'fuzz')",
    "SELECT df.explain(df.race('SELECT 1', 'SELECT 2')), df.version()",
    "SELECT df.start('SELECT 1'::text ~> df.sleep(1) ~> 'SELECT 2')",
    'SELECT df.start(\'{"type":"SQL","query":"SELECT 1"}\')',
    "SELECT df.start('SELECT 1'); SELECT df.explain('SELEC 2')",
    "CREATE EXTENSION IF NOT EXISTS pg_durable",
    "SELECT df.loop('SELECT 1' ~> df.break('{\"done\": true}'))",
    "SELECT df.start(df.http('https://example.com', 'GET') ~> 'SELECT 1')",
    "SELECT * FROM df.instance_nodes('00000000-0000-0000-0000-000000000000')",
]
FRAGMENTS = [
    *("~>", "|=>", "&", "|", "?>", "!>", "@>", "'", "''", "$$", "$a$", "$q$", "(", ")"),
    *(",", ";", "--", "/*", "*/", "\\", "::text", "=>", "label =>", "fut =>", "E'\\"),
    *("df.start(", "df.explain(", "df.sql(", "df.seq(", "df.", "pg_durable", "{v}", "$r.y"),
    *("U&'\\0041'", "'{}'", '\'{"type":"THEN"}\'', "'SELEC 1'", "$1", "ARRAY[", "]"),
    *("CREATE EXTENSION pg_durable;", "'SELECT 1' ~> ", "\u00e9", "\U0001f600", "\n"),
]


def _insert(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(FRAGMENTS) + text[at:]


def _delete(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + text[at + rng.randint(1, 12) :]


def _duplicate(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    end = min(len(text), at + rng.randint(1, 30))
    return text[:end] + text[at:end] + text[end:]


def _truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


def _random_chars(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    noise = "".join(
        chr(rng.choice((rng.randint(1, 127), rng.randint(128, 0xD7FF))))
        for _ in range(rng.randint(1, 8))
    )
    return text[:at] + noise + text[at:]


def _deepen(rng: random.Random, text: str) -> str:
    """Deep trees for the parser and the classifier, cheap for the server to evaluate."""
    depth = rng.choice((50, 400, 1200))
    shape = rng.randrange(3)
    if shape == 0:
        deep = "(" * depth + "'SELECT 1'" + ")" * depth
    elif shape == 1:
        deep = "coalesce(" * depth + "'SELECT 1'" + ")" * depth
    else:  # PostgreSQL refuses 1200 terms (stack depth): an error with a SQLSTATE
        deep = "('SELECT ' || " + "+".join(["1"] * depth) + ")"
    if rng.random() < 0.2:
        deep = " ~> ".join([deep] + ["'SELECT 1'"] * rng.choice((20, 150)))
    return text.replace("'SELECT 1'", deep, 1)


MUTATIONS: list[Callable[[random.Random, str], str]] = [
    *(_insert, _insert, _insert, _delete, _duplicate, _truncate, _random_chars),
    _deepen,
]


def mutated(rng: random.Random) -> bytes:
    """One fuzzed statement: a corpus entry with 1-4 mutations, sometimes with raw bytes
    that are not UTF-8, never a NUL byte."""
    text = rng.choice(CORPUS)
    for _ in range(rng.randint(1, 4)):
        text = rng.choice(MUTATIONS)(rng, text)
    data = text.encode()
    if rng.random() < 0.1:
        at = rng.randrange(len(data) + 1)
        data = data[:at] + rng.randbytes(rng.randint(1, 4)) + data[at:]
    return data.replace(b"\0", b"")


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(dsn)
    conn.execute("SET statement_timeout = '5s'")
    conn.commit()
    return conn


def test_fuzzed_dsl_statements(proxy: ProxyProcess, wf_dsn: str) -> None:
    assert proxy.log_path is not None
    log_offset = proxy.log_path.stat().st_size
    rng = random.Random(SEED)
    problems: list[str] = []
    simple = _connect(wf_dsn)
    extended = _connect(wf_dsn)
    instances_before = extended.execute("SELECT count(*) FROM df.instances").fetchone()
    extended.rollback()
    started = time.monotonic()
    for n in range(STATEMENTS):
        sql = mutated(rng)
        use_simple = n % 2 == 0
        conn = simple if use_simple else extended
        try:
            if use_simple:
                psycopg.ClientCursor(conn).execute(sql)
            else:
                conn.cursor().execute(sql, prepare=False)
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                problems.append(f"no SQLSTATE ({type(exc).__name__}: {exc}) for {sql!r}")
        if conn.closed or conn.broken:
            problems.append(f"connection dropped by {sql!r}")
            conn = _connect(wf_dsn)
            if use_simple:
                simple = conn
            else:
                extended = conn
        else:
            conn.rollback()
        assert time.monotonic() - started < TIME_BUDGET, f"only {n} statements in time"
    assert extended.execute("SELECT count(*) FROM df.instances").fetchone() == instances_before
    simple.close()
    extended.close()
    log = proxy.log_path.read_text()[log_offset:]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
    assert "Traceback" not in log, log[-6000:]
