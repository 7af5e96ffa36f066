"""PostgreSQL plumbing (psycopg 3, synchronous): what several registry processes share.

The statements of ``writes``, ``reads`` and ``liveness`` are written once, for sqlite3's
DB-API; :class:`Adapter` runs them on a psycopg connection (``?`` and ``:name`` become
``%s`` and ``%(name)s``; rows answer by name and by position like ``sqlite3.Row``).

* Every change runs in one transaction that first takes one transaction-level advisory
  lock (:data:`WRITE_LOCK`): changes of all processes are serialised as SQLite's one
  writer serialises them, so "check, then write" (capacity, allowance, membership) is
  atomic across processes, and event ids become visible in id order (a reader tailing
  ``events`` never skips an id committed late).
* Heartbeats are written in batches (:mod:`.pgbeats`: the beats that arrive while one batch
  is written go in the next) on their own connection with ``synchronous_commit = off``
  (like SQLite's WAL + NORMAL: a crash of the database may lose the last fraction of a
  second of beats, never a membership).
* One process sweeps: the one holding the session-level advisory lock :data:`SWEEP_LOCK`;
  it is released when that process or its connection dies, and another one takes it.
* A lost connection is a :class:`StoreUnavailable` (the app answers 503) and is made again
  at the next call, at most every :data:`RECONNECT_S`.

Statements run on the event loop's thread, as with SQLite: a statement on the same host
takes a fraction of a millisecond, and no coroutine interleaves inside a transaction.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from mycelium.registry.store.errors import StoreError, StoreUnavailable, StoreUnusable
from mycelium.registry.store.migrate import migrate

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]

SCHEMES = ("postgresql://", "postgres://")
WRITE_LOCK = 0x6D7963_01  # "myc" 1: one change at a time, across processes
SWEEP_LOCK = 0x6D7963_02  # "myc" 2: the process that sweeps
MIGRATE_LOCK = 0x6D7963_03  # "myc" 3: one process migrates at a time
CONNECT_TIMEOUT_S = 3
RECONNECT_S = 0.5
OPTIONS = "-c statement_timeout=15000 -c lock_timeout=10000"
RETRIES = 3  # of a change that PostgreSQL aborted (deadlock, serialization, unique key)


def is_postgres_url(text: str) -> bool:
    return text.startswith(SCHEMES)


def check_url(url: str) -> str:
    """``url`` if it is a PostgreSQL URL without a password, else :class:`StoreUnusable`.

    A password in the URL would show in ``ps``, in shell history and in logs: it is
    refused; libpq reads it from ``PGPASSWORD`` or the password file (``PGPASSFILE``,
    ``~/.pgpass``)."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
        _ = parts.port
    except ValueError as exc:
        raise StoreUnusable(f"database URL is not valid: {exc}") from None
    if has_password:
        raise StoreUnusable(
            "database URL carries a password: put it in PGPASSWORD or a password file "
            "(PGPASSFILE, ~/.pgpass), not on the command line"
        )
    if not parts.path.strip("/"):
        raise StoreUnusable("database URL names no database (postgresql://USER@HOST:PORT/DB)")
    return url


def describe(url: str) -> str:
    """The URL without query (no secrets in it anyway: passwords are refused)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def translate(sql: str) -> str:
    """sqlite3's placeholders (``?``, ``:name``) in psycopg's (``%s``, ``%(name)s``)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))


class Row(tuple[Any, ...]):
    """A row that answers by position and by column name, like ``sqlite3.Row``."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = [column.name for column in cursor.description or ()]
    index = {name: i for i, name in enumerate(names)}
    return lambda values: Row(values, index)


class Cursor:
    """The result of :meth:`Adapter.execute` (fetchone, fetchall, iteration)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def fetchone(self) -> Row | None:
        if self._cursor.description is None:
            return None
        row: Row | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        if self._cursor.description is None:
            return []
        rows: list[Row] = self._cursor.fetchall()
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class Adapter:
    """A psycopg connection with sqlite3's surface, for the shared statements."""

    row_factory: Any = None  # set by readers that want plain tuples: rows are tuples here

    def __init__(self, conn: Any) -> None:
        self.raw = conn
        self._sql: dict[str, str] = {}

    def _translated(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = translate(sql)
        return text

    def execute(self, sql: str, parameters: Any = None) -> Cursor:
        cursor = self.raw.cursor(row_factory=_row_factory)
        cursor.execute(self._translated(sql), parameters)
        return Cursor(cursor)

    def executemany(self, sql: str, rows: Any) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(self._translated(sql), rows)

    def executescript(self, script: str) -> None:
        self.raw.execute(script)  # no parameters: one simple query with every statement

    def cursor(self) -> Adapter:
        return self


def connect(url: str, *, synchronous_commit: bool = True) -> Any:
    """A psycopg connection (autocommit: transactions are explicit)."""
    import psycopg

    options = OPTIONS if synchronous_commit else OPTIONS + " -c synchronous_commit=off"
    try:
        return psycopg.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=options
        )
    except psycopg.Error as exc:
        why = _first_line(exc)
        raise StoreUnavailable(f"database {describe(url)} is unreachable: {why}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_database(url: str) -> None:
    """Connect and migrate the schema; :class:`StoreUnusable` (one line) if it cannot."""
    PgEngine(url).open().raw.close()


def _migrate(conn: Any) -> int:
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            # and no change of another process meanwhile: each takes WRITE_LOCK before any
            # table, so the migration's table locks cannot deadlock with a change
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return migrate(Adapter(conn), postgres=True)
    except psycopg.Error as exc:
        raise StoreUnusable(f"database schema cannot be migrated: {_first_line(exc)}") from None


class PgEngine:
    """The registry's PostgreSQL database, shared by any number of registry processes."""

    def __init__(self, url: str, *, clock: Clock = time.time) -> None:
        self.url = check_url(url)
        self.clock = clock
        self.pending: dict[int, tuple[Any, ...]] = {}  # SQLite's queue: always empty here
        self._conn: Any = None
        self._beats: Any = None
        self._down_since: float | None = None
        self.sweeping = False

    @property
    def where(self) -> str:
        return describe(self.url)

    # -- life cycle -------------------------------------------------------------------------

    def open(self) -> Adapter:
        """Connect and migrate (one process at a time); :class:`StoreUnusable` if not."""
        try:
            conn = connect(self.url)
        except StoreUnavailable as exc:
            raise StoreUnusable(str(exc)) from None
        _migrate(conn)
        self._conn = conn
        return Adapter(conn)

    def start(self) -> None:
        """Nothing runs in the background: heartbeats are written as they come."""

    async def close(self) -> None:
        for conn in (self._conn, self._beats):
            if conn is not None:
                conn.close()
        self._conn = self._beats = None
        self.sweeping = False

    # -- connections ------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self._reconnect()
            self.sweeping = False  # the session lock went with the old connection
        return self._conn

    def _beat_connection(self) -> Any:
        if self._beats is None or self._beats.closed:
            self._beats = self._reconnect(synchronous_commit=False)
        return self._beats

    def _reconnect(self, *, synchronous_commit: bool = True) -> Any:
        now = time.monotonic()
        if self._down_since is not None and now - self._down_since < RECONNECT_S:
            raise StoreUnavailable(f"database {self.where} is unreachable")
        try:
            conn = connect(self.url, synchronous_commit=synchronous_commit)
        except StoreUnavailable:
            self._down_since = now
            raise
        if self._down_since is not None:
            logger.warning("database %s reachable again", self.where)
        self._down_since = None
        return conn

    def _run(self, conn_of: Callable[[], Any], call: Callable[[Any], T]) -> T:
        """``call(conn)``; a lost connection is closed and reported as StoreUnavailable."""
        import psycopg

        conn = conn_of()
        try:
            return call(conn)
        except psycopg.OperationalError as exc:
            if conn.closed or conn.broken:
                conn.close()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("database %s lost: %s", self.where, _first_line(exc))
                raise StoreUnavailable(f"database {self.where} is unreachable") from None
            raise StoreUnavailable(f"database {self.where} is busy: {_first_line(exc)}") from None

    # -- statements -------------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, now, *args)`` in one transaction holding :data:`WRITE_LOCK`."""
        return self._run(self._connection, lambda conn: self._change(conn, fn, args))

    def _change(self, conn: Any, fn: Callable[..., T], args: Any) -> T:
        import psycopg.errors

        # A unique violation is another process's create with the same Idempotency-Key
        # committed first (the write lock makes it unlikely): run again, the change then
        # finds that record and answers as a retry.
        retried = (
            psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure,
            psycopg.errors.UniqueViolation,
        )
        for attempt in range(RETRIES):
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    return fn(Adapter(conn), self.clock(), *args)
            except retried as exc:
                if attempt == RETRIES - 1:
                    raise
                logger.info("change aborted by the database (%s); retrying", type(exc).__name__)
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return self._run(self._connection, lambda conn: fn(Adapter(conn), self.clock(), *args))

    async def on_helper(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.read(fn, *args)

    async def flush(self) -> None:
        """Nothing is queued: heartbeats are written as they come."""

    def beat_batch(self, sql: str, params: Sequence[Any]) -> set[int]:
        """One batch statement on the heartbeat connection; the ids of the rows it wrote.
        Runs in a worker thread (one batch at a time): the connection is the batch's own."""

        def run(conn: Any) -> set[int]:
            return {row[0] for row in conn.execute(sql, params).fetchall()}

        return self._run(self._beat_connection, run)

    def lookup(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, now, *args)`` now (a read the hot path needs without awaiting)."""
        return self._run(self._connection, lambda conn: fn(Adapter(conn), self.clock(), *args))

    def lead(self) -> bool:
        """True while this process holds :data:`SWEEP_LOCK` (tried if it does not)."""
        if self.sweeping and self._conn is not None and not self._conn.closed:
            return True

        def take(conn: Any) -> bool:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (SWEEP_LOCK,)).fetchone()
            return bool(row[0])

        self.sweeping = self._run(self._connection, take)
        if self.sweeping:
            logger.info("this process sweeps (database %s)", self.where)
        return self.sweeping


__all__ = ["PgEngine", "StoreError", "check_database", "check_url", "is_postgres_url"]
