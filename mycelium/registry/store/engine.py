"""SQLite plumbing: connections, one-writer transactions, the heartbeat queue, checkpoints.

Every statement runs on the event loop's thread, the single writer: a change is a few short
statements (no fsync at commit with WAL + ``synchronous=NORMAL``), and nothing else can
interleave with it, so "check, then write" is atomic. A writer thread measured far slower:
the sqlite3 module releases and retakes the GIL around every row, and each retake waits for
the busy loop. Only single-step work (model blobs, WAL checkpoints, which may fsync) goes
to one helper thread with its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mycelium import config
from mycelium.registry.store.errors import StoreError, StoreUnusable
from mycelium.registry.store.migrate import migrate
from mycelium.registry.store.schema import FLUSH_SQL

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: survives a process crash
    return conn


SQLITE_URL = "sqlite:///"


def database_path(text: str) -> Path:
    """The SQLite file that ``--db`` names, absolute: a path, or ``sqlite:///PATH``
    (SQLAlchemy's spelling: ``sqlite:///rel.db``, ``sqlite:////abs.db``).

    Any other URL is a :class:`StoreUnusable` (one line): taking ``mysql://...`` for a
    folder name would silently start a network of its own (``postgresql://`` URLs are
    taken by :func:`mycelium.registry.store.database` before this).
    """
    if text.startswith(SQLITE_URL):
        text = text.removeprefix(SQLITE_URL)
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreUnusable(
            f"database URL scheme {scheme!r} is not supported: give a SQLite file path, "
            f"{SQLITE_URL}PATH or postgresql://USER@HOST:PORT/DB"
        )
    if not text:
        raise StoreUnusable(f"database path is empty (give a file path or {SQLITE_URL}PATH)")
    return Path(text).expanduser().resolve()


def check_database(path: Path) -> None:
    """Raise :class:`StoreUnusable` (one line) unless ``path`` opens in WAL mode and its
    schema migrates (not newer than this registry's)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=5)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            migrate(conn, postgres=False)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnusable(f"database {path} is not usable: {exc}") from None
    if str(mode).lower() != "wal":
        raise StoreUnusable(f"database {path} cannot use WAL mode (got {mode})")


class Engine:
    """One SQLite file in WAL mode, written from the event loop alone.

    Queued heartbeat rows (``pending``, one per node, see ``FLUSH_SQL``) are committed in
    one ``executemany`` every ``flush_interval`` s and before any other change or read.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        clock: Clock = time.time,
        flush_interval: float = config.REGISTRY_FLUSH_INTERVAL_S,
        checkpoint_interval: float = 5.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.clock = clock
        self.flush_interval = min(flush_interval, 1.0)
        self.checkpoint_interval = checkpoint_interval
        self.pending: dict[int, tuple[Any, ...]] = {}
        self._conn: sqlite3.Connection | None = None
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="registry-blobs")
        self._helper_conn: sqlite3.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def where(self) -> str:
        return str(self.db_path)

    # -- life cycle -------------------------------------------------------------------------

    def open(self) -> sqlite3.Connection:
        """Open the file in WAL mode and create the schema; returns the loop's connection."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.db_path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{self.db_path}: cannot enable WAL (got {mode})")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run off the loop
        migrate(conn, postgres=False)
        self._conn = conn
        return conn

    def start(self) -> None:
        """Start the heartbeat flusher and the WAL checkpointer (inside a running loop)."""
        self._tasks = [
            asyncio.create_task(self._flush_forever(), name="heartbeat-flusher"),
            asyncio.create_task(self._checkpoint_forever(), name="wal-checkpointer"),
        ]

    async def close(self) -> None:
        """Flush queued heartbeats, checkpoint and close the connections."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._conn is not None:
            await self.flush()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None
        await asyncio.get_running_loop().run_in_executor(self._helper, self._close_helper_conn)
        self._helper.shutdown(wait=True)

    # -- statements -------------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, now, *args)`` in one ``BEGIN IMMEDIATE`` transaction, after the
        queued heartbeats. A :class:`StoreError` rolls back ``fn`` alone and propagates."""
        batch = list(self.pending.values())
        self.pending = {}
        return self._transaction(batch, fn, args)

    def _transaction(self, batch: list[tuple[Any, ...]], fn: Callable[..., T], args: Any) -> T:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch:
                conn.executemany(FLUSH_SQL, batch)
            conn.execute("SAVEPOINT op")
            try:
                result = fn(conn, self.clock(), *args)
            except StoreError:
                conn.execute("ROLLBACK TO op")  # refused: keep the heartbeats, drop the rest
                conn.execute("COMMIT")
                raise
            conn.execute("COMMIT")
            return result
        except StoreError:
            raise
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, now, *args)`` after committing queued heartbeats."""
        await self.flush()
        return fn(self.connection(), self.clock(), *args)

    async def on_helper(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, now, *args)`` on the helper thread with its own connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._helper, self._call_on_helper, fn, args)

    def _call_on_helper(self, fn: Callable[..., T], args: Any) -> T:
        return fn(self._helper_connection(), self.clock(), *args)

    async def flush(self) -> None:
        """Commit queued heartbeats now."""
        if self.pending:
            await self.write(_nothing)

    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("store is not open")
        return self._conn

    # -- background -------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self.pending:
                try:
                    await self.flush()
                except sqlite3.Error:
                    logger.exception("heartbeat flush failed; will retry")

    async def _checkpoint_forever(self) -> None:
        """Copy the WAL into the database on the helper thread: a checkpoint may fsync."""
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await self.on_helper(_checkpoint)
            except sqlite3.Error:
                logger.exception("WAL checkpoint failed; will retry")

    def _helper_connection(self) -> sqlite3.Connection:
        if self._helper_conn is None:
            self._helper_conn = connect(self.db_path)
        return self._helper_conn

    def _close_helper_conn(self) -> None:
        if self._helper_conn is not None:
            self._helper_conn.close()
            self._helper_conn = None


def _nothing(conn: sqlite3.Connection, now: float) -> None:
    """An empty change: the transaction commits the queued heartbeats alone."""


def _checkpoint(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
