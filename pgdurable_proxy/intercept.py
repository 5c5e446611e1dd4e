"""The relay's hook for candidate Query/Parse messages: classify once, cache by SQL text."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dsl import Classification, StatementKind, classify
from pgdurable_proxy.metrics import Metrics
from pgdurable_proxy.wire.messages import frame

_Q = ord("Q")


def message_sql(msg_type: int, message: bytes) -> bytes:
    """The SQL text of a whole Query or Parse message, as raw bytes."""
    if msg_type == _Q:
        return message[5:-1]
    name_end = message.index(b"\0", 5)
    return message[name_end + 1 : message.index(b"\0", name_end + 1)]


@dataclass(frozen=True, slots=True)
class Decision:
    """The interceptor's answer for one message."""

    replacement: bytes | None = None  # None: forward the original bytes
    starts_workflow: bool = False
    positions_errors: bool = False  # errors of this statement may need a position added
    position_hints: tuple[tuple[str, int], ...] = ()


PASS = Decision()


def replace_sql(msg_type: int, message: bytes, sql: bytes) -> bytes:
    """The same Query/Parse message carrying different SQL text (parameter types kept)."""
    if msg_type == _Q:
        return frame(b"Q", sql + b"\0")
    name_end = message.index(b"\0", 5)
    sql_end = message.index(b"\0", name_end + 1)
    return frame(b"P", message[5 : name_end + 1] + sql + message[sql_end:])


class Interceptor:
    """Classifies candidate statements (cached) and decides what the server receives."""

    def __init__(
        self,
        metrics: Metrics,
        classifier: Callable[[str], Classification] = classify,
        cache_size: int = 10_000,
    ) -> None:
        self.metrics = metrics
        self._classify = classifier
        self._cache: dict[bytes, Classification] = {}
        self._cache_size = cache_size

    def verdict(self, sql: bytes) -> Classification:
        """The cached classification of `sql` (classifying it on first sight)."""
        cached = self._cache.get(sql)
        if cached is not None:
            self.metrics.classify_cache_hits_total += 1
            return cached
        self.metrics.classified_total += 1
        verdict = self._classify(sql.decode("utf-8", "replace"))
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[sql] = verdict
        return verdict

    def inspect(
        self, session_parameters: Mapping[str, str], msg_type: int, message: bytes
    ) -> Decision:
        """What to do with a candidate message: replacement bytes and engine hints."""
        if not _lexable(session_parameters):
            return PASS
        self.metrics.candidates_total += 1
        verdict = self.verdict(message_sql(msg_type, message))
        if verdict.kind is StatementKind.WORKFLOW:
            self.metrics.workflow_statements_total += 1
        replacement = None
        if verdict.rewritten is not None:
            replacement = replace_sql(msg_type, message, verdict.rewritten.encode())
        hints = tuple((p.message_prefix, p.position) for p in verdict.literal_positions)
        positions = verdict.step_error is not None or bool(hints)
        return Decision(replacement, verdict.starts_workflow, positions, hints)


def _lexable(parameters: Mapping[str, str]) -> bool:
    """pglast reads UTF-8 with standard_conforming_strings on; skip other sessions."""
    encoding = parameters.get("client_encoding", "UTF8").upper().replace("-", "")
    return encoding == "UTF8" and parameters.get("standard_conforming_strings", "on") == "on"
