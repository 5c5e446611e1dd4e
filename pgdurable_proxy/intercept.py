"""The relay's hook for candidate Query/Parse messages: classify once, cache by SQL text."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dsl import Classification, StatementKind, classify
from pgdurable_proxy.metrics import Metrics

_Q = ord("Q")


def message_sql(msg_type: int, message: bytes) -> bytes:
    """The SQL text of a whole Query or Parse message, as raw bytes."""
    if msg_type == _Q:
        return message[5:-1]
    name_end = message.index(b"\0", 5)
    return message[name_end + 1 : message.index(b"\0", name_end + 1)]


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
    ) -> bytes | None:
        """Return replacement bytes for a candidate message, or None to forward it as is."""
        if not _lexable(session_parameters):
            return None
        self.metrics.candidates_total += 1
        verdict = self.verdict(message_sql(msg_type, message))
        if verdict.kind is StatementKind.WORKFLOW:
            self.metrics.workflow_statements_total += 1
        return None


def _lexable(parameters: Mapping[str, str]) -> bool:
    """pglast reads UTF-8 with standard_conforming_strings on; skip other sessions."""
    encoding = parameters.get("client_encoding", "UTF8").upper().replace("-", "")
    return encoding == "UTF8" and parameters.get("standard_conforming_strings", "on") == "on"
