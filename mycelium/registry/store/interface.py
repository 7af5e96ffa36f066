"""The seam between the store's logic and its database: what :class:`~.store.Store` needs
of an engine. Two engines: :class:`~.engine.Engine` (SQLite, one process) and
:class:`~.postgres.PgEngine` (PostgreSQL, any number of processes over one database).

The routes, the dashboard and the sweeper talk to one interface, :class:`~.store.Store`'s
public methods (``RegistryStore``); :class:`~.pgstore.PgStore` is that class with every
check read from the database instead of the in-memory token mirror. The statements are
shared: ``writes``, ``reads`` and ``liveness`` run on either engine's connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class EngineLike(Protocol):
    """Connections and transactions: ``fn(conn, now, *args)`` runs the shared statements."""

    pending: dict[int, tuple[Any, ...]]

    @property
    def where(self) -> str: ...

    def open(self) -> Any: ...

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def read(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def on_helper(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def flush(self) -> None: ...
