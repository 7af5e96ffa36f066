"""The throwaway PostgreSQL server (:mod:`mycelium.lab.postgres`) as the tests use it, and
:func:`query`, a test's read of the database its registry used."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from mycelium.lab.postgres import SUPERUSER, PgServer, bindir, missing_reason, postgres_server

__all__ = ["SUPERUSER", "PgServer", "bindir", "missing_reason", "postgres_server", "query"]


def query(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (sqlite3's ``?`` placeholders) read straight from the database a
    test's registry used: a SQLite file, or a PostgreSQL URL."""
    if isinstance(db, Path):
        import sqlite3

        with contextlib.closing(sqlite3.connect(db)) as conn:
            return [tuple(row) for row in conn.execute(sql, params)]
    import psycopg

    from mycelium.registry.store.postgres import translate

    with psycopg.connect(db) as conn:
        return [tuple(row) for row in conn.execute(translate(sql), params).fetchall()]
