"""The registry's store: the only code in Mycelium Net that touches SQLite.

- ``schema``: tables and indexes, created when the store opens.
- ``records``: frozen values going in and out (``GroupSpec``, ``Heartbeat``, ``Model``, ...).
- ``errors``: refusals (not found, forbidden, conflict, limit) without HTTP status codes.
- ``engine``: connections, one-writer transactions on the event loop, the heartbeat queue,
  WAL checkpoints and blobs on a helper thread.
- ``writes`` / ``reads``: the statements, as plain functions ``fn(conn, now, ...)``.
- ``store``: :class:`Store`, the keyword-only async API the registry's routes call.
"""

from mycelium.registry.store.engine import check_database, database_path
from mycelium.registry.store.errors import (
    ConflictError,
    ForbiddenError,
    LimitError,
    NotFoundError,
    StoreError,
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
    "Store",
    "StoreError",
    "StoreUnusable",
    "check_database",
    "database_path",
    "hash_secret",
]
