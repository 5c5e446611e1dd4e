"""The relay's hook for candidate Query/Parse messages: classify once, cache by SQL text."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dsl import Classification, StatementKind, classify
from dsl.settings_view import mentions_settings_view, with_settings_rows
from pgdurable_proxy.metrics import Metrics
from pgdurable_proxy.wire.messages import frame

_Q = ord("Q")


def message_sql(msg_type: int, message: bytes) -> bytes | None:
    """The SQL text of a whole Query or Parse message, as raw bytes; None if malformed."""
    if msg_type == _Q:
        return message[5:-1]
    name_end = message.find(b"\0", 5)
    sql_end = message.find(b"\0", name_end + 1) if name_end >= 0 else -1
    if sql_end < 0:
        return None  # the server refuses it (08P01); nothing to classify
    return message[name_end + 1 : sql_end]


@dataclass(frozen=True, slots=True)
class Decision:
    """The interceptor's answer for one message."""

    replacement: bytes | None = None  # None: forward the original bytes
    positions_errors: bool = False  # errors of this statement may need a position added
    position_hints: tuple[tuple[str, int], ...] = ()
    creates_extension: bool = False  # CREATE EXTENSION pg_durable: its tag is renamed


PASS = Decision()


def replace_sql(msg_type: int, message: bytes, sql: bytes) -> bytes:
    """The same Query/Parse message carrying different SQL text (parameter types kept)."""
    if msg_type == _Q:
        return frame(b"Q", sql + b"\0")
    name_end = message.index(b"\0", 5)
    sql_end = message.index(b"\0", name_end + 1)
    return frame(b"P", message[5 : name_end + 1] + sql + message[sql_end:])


# Only texts up to this size are cached. The cache exists for statements an application
# sends again and again (a df.start or df.status in a loop), and those are short: the
# walkthrough's and pg_durable's examples are all under 1 KiB. A longer text is re-parsed
# when it comes back (≈ 15 µs per 200 characters), which costs less than keeping it.
MAX_CACHED_SQL_BYTES = 8 * 1024
# What the whole cache may hold: texts, rewritten texts and a fixed charge per entry.
CACHE_BUDGET_BYTES = 4 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 256


class Interceptor:
    """Classifies candidate statements (cached) and decides what the server receives."""

    def __init__(
        self,
        metrics: Metrics,
        classifier: Callable[[str], Classification] = classify,
        cache_budget: int = CACHE_BUDGET_BYTES,
        max_cached_sql: int = MAX_CACHED_SQL_BYTES,
        settings_relation: str | None = None,
    ) -> None:
        self.metrics = metrics
        self._settings_relation = settings_relation  # see dsl/settings_view.py
        self._classify = classifier
        self._cache: dict[bytes, tuple[Classification, int]] = {}
        self._budget = cache_budget
        self._max_cached_sql = max_cached_sql

    def verdict(self, sql: bytes) -> Classification:
        """The cached classification of `sql` (classifying it on first sight)."""
        cached = self._cache.get(sql)
        if cached is not None:
            self.metrics.classify_cache_hits_total += 1
            return cached[0]
        self.metrics.classified_total += 1
        text = sql.decode("utf-8", "replace")
        verdict = self._classify(text)
        if verdict.kind is not StatementKind.UNPARSABLE:
            rewritten = self._with_settings_rows(sql, verdict.rewritten or text)
            if rewritten is not None:
                verdict = dataclasses.replace(verdict, rewritten=rewritten)
        if len(sql) <= self._max_cached_sql:
            self._remember(sql, verdict)
        return verdict

    def _with_settings_rows(self, sql: bytes, text: str) -> str | None:
        relation = self._settings_relation
        if relation is None or not mentions_settings_view(sql):
            return None
        return with_settings_rows(text, relation)

    def settings_rows(
        self, session_parameters: Mapping[str, str], msg_type: int, message: bytes
    ) -> bytes | None:
        """For databases without the df catalog: only pg_settings gains pg_durable's rows."""
        sql = message_sql(msg_type, message)
        if sql is None or not _lexable(session_parameters):
            return None
        rewritten = self._with_settings_rows(sql, sql.decode("utf-8", "replace"))
        return None if rewritten is None else replace_sql(msg_type, message, rewritten.encode())

    def _remember(self, sql: bytes, verdict: Classification) -> None:
        """Cache a verdict, evicting the oldest entries to stay within the byte budget."""
        size = ENTRY_OVERHEAD_BYTES + len(sql) + len(verdict.rewritten or "")
        metrics = self.metrics
        while self._cache and metrics.classify_cache_bytes + size > self._budget:
            oldest = next(iter(self._cache))
            metrics.classify_cache_bytes -= self._cache.pop(oldest)[1]
        self._cache[sql] = (verdict, size)
        metrics.classify_cache_bytes += size
        metrics.classify_cache_entries = len(self._cache)

    def inspect(
        self, session_parameters: Mapping[str, str], msg_type: int, message: bytes
    ) -> Decision:
        """What to do with a candidate message: replacement bytes and engine hints."""
        if not _lexable(session_parameters):
            return PASS
        sql = message_sql(msg_type, message)
        if sql is None:
            return PASS
        self.metrics.candidates_total += 1
        verdict = self.verdict(sql)
        if verdict.kind is StatementKind.WORKFLOW:
            self.metrics.workflow_statements_total += 1
        replacement = None
        if verdict.rewritten is not None:
            replacement = replace_sql(msg_type, message, verdict.rewritten.encode())
        hints = tuple((p.message_prefix, p.position) for p in verdict.literal_positions)
        positions = verdict.step_error is not None or bool(hints)
        creates = verdict.kind is StatementKind.CREATE_EXTENSION and replacement is not None
        return Decision(replacement, positions, hints, creates)


def _lexable(parameters: Mapping[str, str]) -> bool:
    """pglast reads UTF-8 with standard_conforming_strings on; skip other sessions."""
    encoding = parameters.get("client_encoding", "UTF8").upper().replace("-", "")
    return encoding == "UTF8" and parameters.get("standard_conforming_strings", "on") == "on"
