"""Versioned schema migrations, the same ordered steps on SQLite and PostgreSQL.

``schema_version`` holds the last step a database ran; a file made before that table
existed counts as version 0 and runs every step (each is idempotent: ``IF NOT EXISTS``).
A database at a version newer than this registry knows is refused (:class:`StoreUnusable`):
an older registry must not write tables it does not understand.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from mycelium.registry.store.errors import StoreUnusable
from mycelium.registry.store.schema import (
    ADDED_COLUMNS,
    INDEXES_ON_ADDED,
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
    postgres_ddl,
)

logger = logging.getLogger(__name__)


class Script(Protocol):
    """What a migration needs of a connection (sqlite3's, or the PostgreSQL adapter)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executescript(self, sql_script: str, /) -> Any: ...


def migrate(conn: Script, *, postgres: bool) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version it was at."""
    ddl = postgres_ddl if postgres else str
    conn.executescript(ddl(VERSION_TABLE))
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    found = int(row[0]) if row is not None and row[0] is not None else 0
    if found > SCHEMA_VERSION:
        raise StoreUnusable(
            f"database schema version {found} is newer than this registry's "
            f"({SCHEMA_VERSION}): upgrade the registry"
        )
    for version, what, step in MIGRATIONS:
        if version > found:
            logger.info("schema migration %d: %s", version, what)
            conn.executescript(ddl(step))
    _add_missing_columns(conn, postgres)
    conn.executescript(INDEXES_ON_ADDED)
    if found != SCHEMA_VERSION:
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    return found


def _add_missing_columns(conn: Script, postgres: bool) -> None:
    """Add :data:`ADDED_COLUMNS` where missing (additive changes need no version step)."""
    for table, column, kind in ADDED_COLUMNS:
        # Only what is missing: an ALTER TABLE locks the whole table even when it changes
        # nothing, which a registry starting beside busy ones must not do (PostgreSQL).
        if column in _columns(conn, table, postgres):
            continue
        ddl = postgres_ddl(" " + kind) if postgres else f" {kind}"
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}{ddl}")


def _columns(conn: Script, table: str, postgres: bool) -> set[str]:
    if postgres:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {row[0] for row in rows}
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
