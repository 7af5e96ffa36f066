"""The registry's store: the only code in Mycelium Net that touches its database, SQLite
(one process, the default) or PostgreSQL (any number of processes over one database).

- ``interface``: :class:`RegistryStore`, what the routes, dashboard and sweeper call.
- ``migrate``: versioned schema steps, the same on both databases.
- ``postgres`` / ``pgstore``: the PostgreSQL engine and :class:`PgStore`.

- ``schema``: tables and indexes, created when the store opens.
- ``records``: frozen values going in and out (``GroupSpec``, ``Heartbeat``, ``Model``, ...).
- ``errors``: refusals (not found, forbidden, conflict, limit) without HTTP status codes.
- ``engine``: connections, one-writer transactions on the event loop, the heartbeat queue,
  WAL checkpoints and blobs on a helper thread.
- ``writes`` / ``reads``: the statements, as plain functions ``fn(conn, now, ...)``.
- ``digest``: the dashboard's digest of the events log (a read, like ``reads``).
- ``store``: :class:`Store`, the keyword-only async API the registry's routes call.
"""

from pathlib import Path
from typing import Any

from mycelium.registry.store.engine import check_database, database_path
from mycelium.registry.store.errors import (
    ConflictError,
    ForbiddenError,
    LimitError,
    NotFoundError,
    StoreError,
    StoreUnavailable,
    StoreUnusable,
)
from mycelium.registry.store.records import (
    GroupCreatedRecord,
    GroupSpec,
    Heartbeat,
    Model,
    NodeCreatedRecord,
    RoundReport,
    Row,
)
from mycelium.registry.store.store import Store
from mycelium.registry.store.writes import hash_secret

RegistryStore = Store
"""The interface the routes, the dashboard and the sweeper call: :class:`Store`'s public
methods, which :class:`~.pgstore.PgStore` (PostgreSQL) keeps and implements again where
the SQLite store reads its in-memory mirror."""


def database(text: str) -> Path | str:
    """What ``--db`` names: a SQLite file (absolute :class:`Path`) or a PostgreSQL URL
    (``postgresql://USER@HOST:PORT/DB``, refused with a password in it); a
    :class:`StoreUnusable` (one line) otherwise."""
    from mycelium.registry.store.postgres import check_url, is_postgres_url

    return check_url(text) if is_postgres_url(text) else database_path(text)


def check(db: Path | str) -> None:
    """Raise :class:`StoreUnusable` (one line) unless the database opens (and, PostgreSQL,
    is reachable and migrates)."""
    if isinstance(db, Path):
        check_database(db)
        return
    from mycelium.registry.store.postgres import check_database as check_postgres

    check_postgres(db)


def make_store(db: Path | str, **options: Any) -> RegistryStore:
    """The store of ``db`` (see :func:`database`); ``options`` are :class:`Store`'s."""
    if isinstance(db, Path):
        return Store(db, **options)
    from mycelium.registry.store.pgstore import PgStore

    return PgStore(db, **options)


__all__ = [
    "ConflictError",
    "ForbiddenError",
    "LimitError",
    "GroupCreatedRecord",
    "GroupSpec",
    "Heartbeat",
    "Model",
    "NodeCreatedRecord",
    "NotFoundError",
    "RoundReport",
    "Row",
    "RegistryStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoreUnusable",
    "check",
    "database",
    "make_store",
    "check_database",
    "database_path",
    "hash_secret",
]
