"""What a run cost PostgreSQL and the CPUs: pg_stat_database, pg_stat_statements, /proc.

Used by the bench process (pgdurable runs) and by the DBOS child process alike, so it is
synchronous (psycopg) and reads everything from a superuser connection to the `postgres`
database, whose own transactions are therefore never in the measured databases' counts.

PostgreSQL (15+) backends publish their pg_stat_database counters at most once a second
and about a second after going idle, so a snapshot is taken only after SETTLE_S of calm.
pg_stat_statements counters are updated as each statement ends.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SETTLE_S = 1.3
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Statements a benchmark client issues only to learn that a workflow finished.
WAIT_MARKERS = ("bench:watch", "df.status(", "df.await_instance(")
START_MARKER = "df.start("
_RI_CHECK = re.compile(r"SELECT (1|\$\d+) FROM ONLY ")

_DB_SQL = "SELECT datname, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = ANY(%s)"
_STMT_SQL = (
    "SELECT d.datname, s.userid::int8, s.queryid, s.toplevel, s.calls, s.query "
    "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = ANY(%s)"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counters of some databases at one moment."""

    commits: dict[str, int]
    rollbacks: dict[str, int]
    # (database, userid, queryid, toplevel) -> (calls, query text); None: no pg_stat_statements
    statements: dict[tuple[str, int, int, bool], tuple[int, str]] | None


@dataclass
class StatementCount:
    """Calls of one normalised statement during a run."""

    database: str
    calls: int
    kind: str  # start | wait | other
    query: str


@dataclass
class StatsDelta:
    """The difference of two snapshots."""

    commits: dict[str, int]
    rollbacks: dict[str, int]
    statements: list[StatementCount] | None = None

    @property
    def total_commits(self) -> int:
        return sum(self.commits.values())

    def calls(self, kind: str) -> int | None:
        """Summed calls of statements of one kind (None without pg_stat_statements)."""
        if self.statements is None:
            return None
        return sum(s.calls for s in self.statements if s.kind == kind)

    def top(self, n: int = 12) -> list[StatementCount]:
        return sorted(self.statements or [], key=lambda s: -s.calls)[:n]


def statement_kind(query: str) -> str:
    """start (df.start), wait (status polls, await_instance), internal or other.

    internal: the foreign-key checks PostgreSQL runs itself when deferred constraints are
    checked at COMMIT, which pg_stat_statements records as top-level statements.
    """
    if any(marker in query for marker in WAIT_MARKERS):
        return "wait"
    if START_MARKER in query:
        return "start"
    if _RI_CHECK.match(query) and "FOR KEY SHARE OF x" in query:
        return "internal"
    return "other"


class StatsReader:
    """A superuser connection to the `postgres` database that takes snapshots."""

    def __init__(self, dsn: str, databases: Sequence[str], statements: bool) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.databases = list(databases)
        self.with_statements = statements

    def close(self) -> None:
        self.conn.close()

    def snapshot(self, settle_s: float = SETTLE_S) -> Snapshot:
        """Wait for the counters to settle, then read them."""
        time.sleep(settle_s)
        commits: dict[str, int] = {}
        rollbacks: dict[str, int] = {}
        for name, commit, rollback in self.conn.execute(_DB_SQL, (self.databases,)):
            commits[name], rollbacks[name] = int(commit), int(rollback)
        statements = None
        if self.with_statements:
            statements = {
                (db, int(user), int(qid), bool(top)): (int(calls), str(query))
                for db, user, qid, top, calls, query in self.conn.execute(
                    _STMT_SQL, (self.databases,)
                )
            }
        return Snapshot(commits, rollbacks, statements)


def delta(before: Snapshot, after: Snapshot) -> StatsDelta:
    """after - before, statement by statement."""
    result = StatsDelta(
        commits={db: n - before.commits.get(db, 0) for db, n in after.commits.items()},
        rollbacks={db: n - before.rollbacks.get(db, 0) for db, n in after.rollbacks.items()},
    )
    if before.statements is not None and after.statements is not None:
        result.statements = []
        for key, (calls, query) in after.statements.items():
            old = before.statements.get(key, (0, ""))[0]
            if calls > old:
                result.statements.append(
                    StatementCount(key[0], calls - old, statement_kind(query), _one_line(query))
                )
    return result


def _one_line(query: str, width: int = 160) -> str:
    text = " ".join(query.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- CPU ----------------------------------------------------------------------------------


def _proc_ticks(pid: int) -> tuple[int, int, int] | None:
    """(ppid, own utime+stime, reaped children's cutime+cstime) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # fields[0] is proc(5) field 3
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _all_ticks() -> dict[int, tuple[int, int, int]]:
    procs: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (t := _proc_ticks(int(entry.name))) is not None:
            procs[int(entry.name)] = t
    return procs


def _tree_ticks(procs: dict[int, tuple[int, int, int]], root: int) -> int:
    """CPU of `root` and all its descendants, including the children they have reaped."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, stack, seen = 0, [root] if root in procs else [], set[int]()
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            total += procs[pid][1] + procs[pid][2]
            stack.extend(children.get(pid, ()))
    return total


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[1]) + int(fields[2]) + int(fields[3])


@dataclass
class CpuProbe:
    """CPU-seconds of some processes (trees or single ones) and of the rest of the machine.

    `watch` maps a name to (pid or pids, with descendants?); `roots` are the trees that are
    the benchmark's own work: `other` is the machine's busy time outside them.
    """

    watch: dict[str, tuple[int | tuple[int, ...], bool]]
    roots: tuple[int, ...] = ()
    _start: dict[str, int] = field(default_factory=dict)

    def _read(self) -> dict[str, int]:
        procs = _all_ticks()
        ticks = {
            name: sum(
                _tree_ticks(procs, pid) if tree else (procs[pid][1] if pid in procs else 0)
                for pid in ((pids,) if isinstance(pids, int) else pids)
            )
            for name, (pids, tree) in self.watch.items()
        }
        ticks["_ours"] = sum(_tree_ticks(procs, pid) for pid in self.roots)
        ticks["_busy"] = _busy_ticks()
        return ticks

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        """CPU-seconds per watched name since start(), and `other` (outside the roots)."""
        end = self._read()
        used = {name: (end[name] - self._start[name]) / CLK_TCK for name in self.watch}
        busy = end["_busy"] - self._start["_busy"]
        used["other"] = max(busy - (end["_ours"] - self._start["_ours"]), 0) / CLK_TCK
        return {name: round(v, 2) for name, v in used.items()}
