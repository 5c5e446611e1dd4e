"""The classifier cache: short texts only, bounded by bytes, oldest evicted first."""

from __future__ import annotations

from dsl import Classification, StatementKind
from pgdurable_proxy.intercept import ENTRY_OVERHEAD_BYTES, Interceptor
from pgdurable_proxy.metrics import Metrics


def _interceptor(budget: int, max_sql: int) -> tuple[Interceptor, list[str]]:
    classified: list[str] = []

    def classifier(sql: str) -> Classification:
        classified.append(sql)
        return Classification(StatementKind.WORKFLOW)

    return Interceptor(Metrics(), classifier, budget, max_sql), classified


def test_long_texts_are_classified_every_time_and_never_kept() -> None:
    interceptor, classified = _interceptor(budget=1 << 20, max_sql=100)
    long_sql = b"SELECT df.version() -- " + b"x" * 100
    interceptor.verdict(long_sql)
    interceptor.verdict(long_sql)
    assert len(classified) == 2
    assert interceptor.metrics.classify_cache_entries == 0
    assert interceptor.metrics.classify_cache_bytes == 0


def test_cache_stays_within_its_byte_budget() -> None:
    texts = [b"SELECT df.f%d()" % n for n in range(10, 15)]  # 15 bytes each
    entry = ENTRY_OVERHEAD_BYTES + 15
    interceptor, classified = _interceptor(budget=3 * entry, max_sql=100)
    for sql in texts:
        interceptor.verdict(sql)
    metrics = interceptor.metrics
    assert (metrics.classify_cache_entries, metrics.classify_cache_bytes) == (3, 3 * entry)
    interceptor.verdict(texts[-1])  # kept: a hit
    assert metrics.classify_cache_hits_total == 1
    interceptor.verdict(texts[0])  # evicted first: classified again
    assert len(classified) == 6
