"""Fixtures shared by the integration tests that use the catalog database directly (a test
module may define its own `conn`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest


@pytest.fixture
def conn(catalog_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit session on the migrated catalog database."""
    with psycopg.connect(catalog_dsn, autocommit=True) as connection:
        yield connection
