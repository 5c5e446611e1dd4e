"""Install the df catalog (engine/sql/catalog), or upgrade an older one to it, under a lock.

A fresh database gets the whole catalog in one transaction. A database whose catalog is at
an older version gets, in one transaction, the upgrade files above its version
(engine/sql/upgrades/NNNN_name.sql, NNNN the version each brings it to), then the catalog's
code files again (they only CREATE OR REPLACE). Either way df._migrations records the
version reached. See engine/sql/README.md.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from engine.errors import MigrationError

log = logging.getLogger("pgdurable.catalog")

# pg_advisory_lock key: ASCII "pgdm" — serialises installers across pgdurable processes.
MIGRATION_LOCK = 0x7067646D

# The catalog's files in install order. The structure files (schemas, tables, types,
# operators) run on a fresh database only; the code files (functions, views, triggers,
# function privileges) run on every install and upgrade.
STRUCTURE_FILES = ("tables",)
CODE_FILES = (
    "durofut",
    "cron",
    "builders",
    "graph",
    "start",
    "control",
    "pause",
    "grants",
    "inspect",
    "activity",
    "explain",
    "engine",
    "poll",
    "presence",
    "first_step",
    "step_results",
    "result_storage",
)
LATE_STRUCTURE_FILES = ("operators",)

# The first catalog version, and its name in df._migrations. Databases built by the
# pre-release numbered migrations (1 to 19) are at their last migration's version.
CATALOG_BASE_VERSION = 20
CATALOG_NAME = "catalog"
# The oldest pre-release migration the upgrade to CATALOG_BASE_VERSION starts from.
OLDEST_UPGRADABLE = 17

_UPGRADE_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """One upgrade file: what brings a catalog to `version`."""

    version: int
    name: str
    sql: str


def catalog_sql(names: tuple[str, ...]) -> str:
    """The text of the named catalog files, in order."""
    folder = resources.files("engine") / "sql" / "catalog"
    return "\n".join((folder / f"{name}.sql").read_text() for name in names)


def load_upgrades() -> list[Upgrade]:
    """Every upgrade file shipped with the package, in version order."""
    folder = resources.files("engine") / "sql" / "upgrades"
    found = []
    for entry in folder.iterdir():
        match = _UPGRADE_FILE.match(entry.name)
        if match:
            found.append(Upgrade(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda u: u.version)
    versions = [u.version for u in found]
    expected = list(range(CATALOG_BASE_VERSION, CATALOG_BASE_VERSION + len(found)))
    if versions != expected:
        raise MigrationError(f"upgrade versions are not contiguous from 20: {versions}")
    return found


def catalog_version() -> int:
    """The version of the catalog this package installs."""
    upgrades = load_upgrades()
    return upgrades[-1].version if upgrades else CATALOG_BASE_VERSION


async def current_version(conn: asyncpg.Connection) -> int:
    """The version of the database's catalog (0 when it has none)."""
    exists = await conn.fetchval("SELECT to_regclass('df._migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM df._migrations"))


async def migrate(conn: asyncpg.Connection) -> int:
    """Install or upgrade the catalog under the advisory lock; return the resulting version."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        version = await current_version(conn)
        target = catalog_version()
        if version == target:
            return version
        if version > target:
            raise MigrationError(
                f"the df catalog is at version {version}, newer than this pgdurable's "
                f"{target}: run a pgdurable at least as recent as the one that installed it"
            )
        if 0 < version < OLDEST_UPGRADABLE:
            raise MigrationError(
                f"the df catalog is at pre-release migration {version:04d}, older than "
                f"{OLDEST_UPGRADABLE:04d}, which this pgdurable cannot upgrade: first start a "
                "pre-release pgdurable that brings it to migration 0019 (or 0017), or drop the "
                "schemas df and _duroxide (losing their workflows) and start again"
            )
        await _apply(conn, version, target)
        return target
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _apply(conn: asyncpg.Connection, version: int, target: int) -> None:
    """Install (version 0) or upgrade the catalog to `target` in one transaction."""
    steps: list[tuple[int, str]]
    if version == 0:
        log.info("event=install_catalog version=%d", target)
        script = "\n".join(
            (
                catalog_sql(STRUCTURE_FILES),
                catalog_sql(CODE_FILES),
                catalog_sql(LATE_STRUCTURE_FILES),
            )
        )
        steps = [(CATALOG_BASE_VERSION, CATALOG_NAME)]
        steps += [(u.version, u.name) for u in load_upgrades() if u.version > CATALOG_BASE_VERSION]
    else:
        log.info("event=upgrade_catalog from=%d to=%d", version, target)
        upgrades = [u for u in load_upgrades() if u.version > version]
        script = "\n".join([u.sql for u in upgrades] + [catalog_sql(CODE_FILES)])
        steps = [(u.version, u.name) for u in upgrades]
    try:
        async with conn.transaction():
            # Function bodies refer to functions created later in the script (as pg_dump).
            await conn.execute("SET LOCAL check_function_bodies = off")
            await conn.execute(script)
            await conn.executemany(
                "INSERT INTO df._migrations (version, name) VALUES ($1, $2)", steps
            )
    except asyncpg.PostgresError as exc:
        action = "installing" if version == 0 else f"upgrading from version {version}"
        raise MigrationError(f"{action} the df catalog failed: {exc}") from exc
