"""Install and upgrade the df catalog from numbered .sql files, under an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from engine.errors import MigrationError

log = logging.getLogger("pgdurable.migrations")

# pg_advisory_lock key: ASCII "pgdm" — serialises installers across pgdurable processes.
MIGRATION_LOCK = 0x7067646D
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("engine") / "sql" / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions are not contiguous: {versions}")
    return found


async def current_version(conn: asyncpg.Connection) -> int:
    """The highest applied migration (0 on an empty database)."""
    exists = await conn.fetchval("SELECT to_regclass('df._migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM df._migrations"))


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply pending migrations, each in its own transaction; return the resulting version."""
    migrations = load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        version = await current_version(conn)
        for migration in migrations:
            if migration.version <= version:
                continue
            log.warning("event=migrate version=%d name=%s", migration.version, migration.name)
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO df._migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            version = migration.version
        return version
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
