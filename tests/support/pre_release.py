"""Databases built by older catalogs, for the catalog upgrade tests.

pre_release_migrations.tar.gz is a frozen copy of the pre-release migrations 0001-0019;
released_catalog_vNN.sql.gz is the whole script a released pgdurable installed as catalog
version NN. Both are used only to build old databases for the upgrade test.
"""

from __future__ import annotations

import gzip
import re
import tarfile
from functools import cache
from pathlib import Path

import psycopg

ARCHIVE = Path(__file__).with_name("pre_release_migrations.tar.gz")
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@cache
def pre_release_migrations() -> tuple[tuple[int, str, str], ...]:
    """(version, name, sql) of each pre-release migration, in version order."""
    found = []
    with tarfile.open(ARCHIVE) as archive:
        for member in archive.getmembers():
            match = _FILE.match(Path(member.name).name)
            extracted = archive.extractfile(member)
            if match and extracted is not None:
                sql = extracted.read().decode()
                found.append((int(match.group(1)), match.group(2), sql))
    found.sort()
    assert [v for v, _, _ in found] == list(range(1, 20)), "the frozen copy is 0001-0019"
    return tuple(found)


def build_pre_release_catalog(dsn: str, up_to: int) -> None:
    """Apply migrations 1..up_to to an empty database as the pre-release installer did:
    each in its own transaction, recorded in df._migrations."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for version, name, sql in pre_release_migrations():
            if version > up_to:
                break
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO df._migrations (version, name) VALUES (%s, %s)", (version, name)
                )


RELEASED_CATALOGS = {20: ("catalog", Path(__file__).with_name("released_catalog_v20.sql.gz"))}


def build_released_catalog(dsn: str, version: int) -> None:
    """Install a released catalog into an empty database as its installer did: the whole
    script in one transaction (function bodies unchecked), recorded in df._migrations."""
    name, path = RELEASED_CATALOGS[version]
    with gzip.open(path, "rt") as script_file:
        script = script_file.read()
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL check_function_bodies = off")
        conn.execute(script.encode())
        conn.execute("INSERT INTO df._migrations (version, name) VALUES (%s, %s)", (version, name))
