"""Registry storage: the only module that touches SQLite.

Design (see docs/registry.md):

* The event loop's thread is the single writer: every change runs there as one
  ``BEGIN IMMEDIATE`` ... ``COMMIT`` before the caller gets an answer, and nothing can
  interleave with it, so capacity checks are atomic. (A writer thread measured slower: the
  sqlite3 module hands the GIL back and forth around every row, against a busy loop.)
* Heartbeats are checked against an in-memory mirror of (token hash, group, last_seen) and
  queued; the queue is committed in one transaction at least every ``flush_interval`` s,
  and before any other change or read.
* Discovery (``list_groups``) is answered from a snapshot of live groups rebuilt after any
  change, and at most ``max_age`` seconds old (liveness changes with time alone).
* WAL checkpoints (which may fsync) and model blobs run on one helper thread.
* Liveness is derived at read time from ``last_seen`` / ``last_report``.

Routes only see :class:`Storage`, so a PostgreSQL backend can be added beside
:class:`SqliteStorage` without touching them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mycelium.dashboard.stats import NetworkStats, select_stats

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Row = dict[str, Any]

ROUNDS_IN_DETAIL = 50

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    fleet_address TEXT NOT NULL,
    task TEXT NOT NULL,
    max_capacity INTEGER NOT NULL,
    join_policy TEXT NOT NULL,
    performance_threshold REAL NOT NULL,
    token_hash TEXT NOT NULL,
    invite_hash TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    accuracy REAL,
    loss REAL,
    round INTEGER,
    model_sha256 TEXT,
    last_report REAL NOT NULL,
    last_live_at REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS groups_status_task ON groups(status, task);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    address TEXT,
    task TEXT NOT NULL,
    num_samples INTEGER NOT NULL,
    token_hash TEXT NOT NULL,
    group_id INTEGER REFERENCES groups(id),
    flower_node_id TEXT,
    accuracy REAL,
    loss REAL,
    round INTEGER,
    last_seen REAL NOT NULL,
    created_at REAL NOT NULL
);
-- group_id alone: an index holding last_seen too would be rewritten by every heartbeat
-- flush (measured 3x slower flushes); a group's few rows are filtered by last_seen cheaply.
DROP INDEX IF EXISTS nodes_group_seen;
CREATE INDEX IF NOT EXISTS nodes_group ON nodes(group_id);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL REFERENCES groups(id),
    round INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    loss REAL NOT NULL,
    num_nodes INTEGER NOT NULL,
    num_examples INTEGER NOT NULL,
    reported_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rounds_group ON rounds(group_id, id);
CREATE TABLE IF NOT EXISTS models (
    group_id INTEGER PRIMARY KEY REFERENCES groups(id),
    sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    at REAL NOT NULL,
    node_id INTEGER,
    group_id INTEGER,
    data TEXT NOT NULL
);
"""

NODE_COLUMNS = (
    "id, name, address, task, num_samples, group_id, flower_node_id, accuracy, loss, round, "
    "last_seen, created_at"
)
GROUP_COLUMNS = (
    "g.id, g.name, g.fleet_address, g.task, g.max_capacity, g.join_policy, "
    "g.performance_threshold, g.status, g.accuracy, g.loss, g.round, g.model_sha256, "
    "g.last_report, g.created_at"
)
FLUSH_SQL = (
    "UPDATE nodes SET last_seen = ?, accuracy = COALESCE(?, accuracy), "
    "loss = COALESCE(?, loss), num_samples = ?, round = COALESCE(?, round), "
    "flower_node_id = COALESCE(?, flower_node_id) WHERE id = ?"
)
LIVE_MEMBERS = (
    "(SELECT COUNT(*) FROM nodes n WHERE n.group_id = g.id AND n.last_seen >= :alive_cut)"
)


# -- errors -----------------------------------------------------------------------------------


class StorageError(Exception):
    """A refused operation; ``status_code`` is the HTTP status the API answers with."""

    status_code = 400

    def __init__(self, message: str, *, group_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.group_id = group_id

    def detail(self) -> Any:
        return self.message


class NotFoundError(StorageError):
    status_code = 404


class ForbiddenError(StorageError):
    status_code = 403


class ConflictError(StorageError):
    """409; ``detail()`` carries the node's actual group so a node can resynchronise."""

    status_code = 409

    def detail(self) -> Any:
        return {"message": self.message, "group_id": self.group_id}


# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCreatedRecord:
    node_id: int
    token: str


@dataclass(frozen=True)
class GroupCreatedRecord:
    group_id: int
    group_token: str
    invite_code: str | None


@dataclass(frozen=True)
class Heartbeat:
    node_id: int
    group_id: int | None
    accuracy: float | None
    loss: float | None
    num_samples: int
    round: int | None
    flower_node_id: int | None


@dataclass(frozen=True)
class GroupSpec:
    name: str
    fleet_address: str
    task: str
    max_capacity: int
    join_policy: str
    performance_threshold: float


@dataclass(frozen=True)
class RoundReport:
    round: int
    accuracy: float
    loss: float
    num_nodes: int
    num_examples: int


@dataclass(frozen=True)
class Model:
    sha256: str
    data: bytes


@dataclass
class _NodeState:
    """In-memory mirror of the columns a heartbeat needs (mutable, loop thread only)."""

    token_hash: str
    group_id: int | None
    last_seen: float


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _matches(secret: str | None, stored_hash: str | None) -> bool:
    if secret is None or stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def _group_name(group_id: int | None) -> str:
    return f"group {group_id}" if group_id is not None else "no group"


def _fid_out(value: str | None) -> int | None:
    return int(value) if value is not None else None


def _fid_in(value: int | None) -> str | None:
    return str(value) if value is not None else None


# -- the interface the routes use -------------------------------------------------------------


class Storage(Protocol):
    """Everything the registry routes need from a storage backend."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def sweep(self) -> None: ...
    async def create_node(
        self, *, name: str, address: str | None, num_samples: int, task: str
    ) -> NodeCreatedRecord: ...
    async def delete_node(self, *, node_id: int, token: str) -> None: ...
    async def get_node(self, *, node_id: int) -> Row: ...
    async def list_nodes(self, *, group_id: int | None, alive: bool | None) -> list[Row]: ...
    async def heartbeat(self, *, beat: Heartbeat, token: str) -> int | None: ...
    async def create_group(self, *, spec: GroupSpec, token: str | None) -> GroupCreatedRecord: ...
    async def list_groups(
        self,
        *,
        task: str | None,
        has_capacity: bool | None,
        limit: int,
        offset: int,
        include_dead: bool,
    ) -> list[Row]: ...
    async def get_group(self, *, group_id: int) -> Row: ...
    async def join(
        self,
        *,
        group_id: int,
        node_id: int,
        token: str,
        invite_code: str | None,
        flower_node_id: int | None,
    ) -> None: ...
    async def leave(self, *, group_id: int, node_id: int, token: str) -> None: ...
    async def migrate(
        self,
        *,
        node_id: int,
        token: str,
        to_group_id: int,
        invite_code: str | None,
        reason: str,
        expected_gain: float,
    ) -> int | None: ...
    async def group_heartbeat(self, *, group_id: int, token: str) -> None: ...
    async def close_group(self, *, group_id: int, token: str) -> None: ...
    async def report_round(self, *, group_id: int, token: str, report: RoundReport) -> None: ...
    async def put_model(self, *, group_id: int, token: str, model: Model) -> None: ...
    async def get_model(self, *, group_id: int) -> Model: ...
    async def events(self, *, since: int, limit: int) -> list[Row]: ...
    async def stats(self) -> NetworkStats: ...


# -- SQLite -----------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: survives a process crash
    return conn


def _event(
    conn: sqlite3.Connection,
    kind: str,
    at: float,
    *,
    node_id: int | None = None,
    group_id: int | None = None,
    **data: Any,
) -> None:
    conn.execute(
        "INSERT INTO events (type, at, node_id, group_id, data) VALUES (?, ?, ?, ?, ?)",
        (kind, at, node_id, group_id, json.dumps(data)),
    )


class SqliteStorage:
    """:class:`Storage` on one SQLite file in WAL mode, written from the event loop alone."""

    def __init__(
        self,
        db_path: Path,
        *,
        node_ttl: float,
        group_ttl: float,
        clock: Clock = time.time,
        flush_interval: float = 0.2,
        checkpoint_interval: float = 5.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.node_ttl = node_ttl
        self.group_ttl = group_ttl
        self.clock = clock
        self.flush_interval = min(flush_interval, 1.0)
        self.checkpoint_interval = checkpoint_interval
        self.max_age = min(1.0, node_ttl / 4, group_ttl / 4)
        self._blobs = ThreadPoolExecutor(1, thread_name_prefix="registry-blobs")
        self._conn: sqlite3.Connection | None = None
        self._blob_conn: sqlite3.Connection | None = None
        self._nodes: dict[int, _NodeState] = {}
        self._by_token: dict[str, int] = {}
        self._group_tokens: dict[int, str] = {}
        self._pending: dict[int, tuple[Any, ...]] = {}
        self._snapshot: tuple[float, list[Row]] | None = None
        self._views: dict[tuple[Any, ...], list[Row]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the schema (WAL mode), load the in-memory mirror, start the background work."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.db_path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{self.db_path}: cannot enable WAL (got {mode})")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run off the loop
        conn.executescript(SCHEMA)
        self._conn = conn
        for row in conn.execute("SELECT id, token_hash, group_id, last_seen FROM nodes"):
            self._nodes[row[0]] = _NodeState(row[1], row[2], row[3])
            self._by_token[row[1]] = row[0]
        for row in conn.execute("SELECT id, token_hash FROM groups"):
            self._group_tokens[row[0]] = row[1]
        nodes, groups = len(self._nodes), len(self._group_tokens)
        logger.info("storage %s: %d nodes, %d groups", self.db_path, nodes, groups)
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
        await asyncio.get_running_loop().run_in_executor(self._blobs, self._close_blob_conn)
        self._blobs.shutdown(wait=True)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._pending:
                try:
                    await self.flush()
                except sqlite3.Error:
                    logger.exception("heartbeat flush failed; will retry")

    async def _checkpoint_forever(self) -> None:
        """Copy the WAL into the database on a thread: a checkpoint may fsync."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await loop.run_in_executor(self._blobs, self._checkpoint)
            except sqlite3.Error:
                logger.exception("WAL checkpoint failed; will retry")

    def _checkpoint(self) -> None:
        self._blob_connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- plumbing ---------------------------------------------------------------------------
    # Every statement runs on the event loop's thread, the single writer: a change is a few
    # short statements (no fsync at commit with WAL + synchronous=NORMAL), and nothing else
    # can interleave, so capacity checks are atomic. A worker thread measured far slower:
    # the sqlite3 module releases and retakes the GIL around every row, and each retake
    # waits for the busy loop. Only single-step work (model blobs, checkpoints) goes to a
    # thread.

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, now, *args)`` in one ``BEGIN IMMEDIATE`` transaction, after the
        queued heartbeats."""
        batch = list(self._pending.values())
        self._pending = {}
        return self._transaction(batch, fn, args)

    def _transaction(self, batch: list[tuple[Any, ...]], fn: Callable[..., T], args: Any) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch:
                conn.executemany(FLUSH_SQL, batch)
            conn.execute("SAVEPOINT op")
            try:
                result = fn(conn, self.clock(), *args)
            except StorageError:
                conn.execute("ROLLBACK TO op")  # refused: keep the heartbeats, drop the rest
                conn.execute("COMMIT")
                raise
            conn.execute("COMMIT")
            return result
        except StorageError:
            raise
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, now, *args)`` after committing queued heartbeats."""
        await self.flush()
        return fn(self._connection(), self.clock(), *args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("storage is not open")
        return self._conn

    def _blob_connection(self) -> sqlite3.Connection:
        if self._blob_conn is None:
            self._blob_conn = _connect(self.db_path)
        return self._blob_conn

    def _close_blob_conn(self) -> None:
        if self._blob_conn is not None:
            self._blob_conn.close()
            self._blob_conn = None

    async def flush(self) -> None:
        """Commit queued heartbeats now."""
        if self._pending:
            await self._write(lambda conn, now: None)

    def _invalidate(self) -> None:
        self._snapshot = None
        self._views = {}

    # -- auth against the in-memory mirror --------------------------------------------------

    def _auth_node(self, node_id: int, token: str) -> _NodeState:
        state = self._nodes.get(node_id)
        if state is None:
            raise NotFoundError(f"node {node_id} not found")
        if not _matches(token, state.token_hash):
            raise ForbiddenError(f"token is not valid for node {node_id}")
        return state

    def _auth_group(self, group_id: int, token: str) -> None:
        stored = self._group_tokens.get(group_id)
        if stored is None:
            raise NotFoundError(f"group {group_id} not found")
        if not _matches(token, stored):
            raise ForbiddenError(f"token is not valid for group {group_id}")

    def _node_moved(self, node_id: int, group_id: int | None, now: float) -> None:
        state = self._nodes.get(node_id)
        if state is not None:
            state.group_id = group_id
            state.last_seen = now
        self._invalidate()

    # -- nodes ------------------------------------------------------------------------------

    async def create_node(
        self, *, name: str, address: str | None, num_samples: int, task: str
    ) -> NodeCreatedRecord:
        token = secrets.token_urlsafe(32)
        token_hash = hash_secret(token)
        node_id, now = await self._write(_insert_node, name, address, num_samples, task, token_hash)
        self._nodes[node_id] = _NodeState(token_hash, None, now)
        self._by_token[token_hash] = node_id
        self._invalidate()
        return NodeCreatedRecord(node_id=node_id, token=token)

    async def delete_node(self, *, node_id: int, token: str) -> None:
        self._auth_node(node_id, token)
        self._pending.pop(node_id, None)
        await self._write(_delete_node, node_id, self.node_ttl)
        state = self._nodes.pop(node_id, None)
        if state is not None:
            self._by_token.pop(state.token_hash, None)
        self._invalidate()

    async def heartbeat(self, *, beat: Heartbeat, token: str) -> int | None:
        """Check the beat against the mirror and queue it; returns the node's group."""
        state = self._auth_node(beat.node_id, token)
        if beat.group_id != state.group_id:
            raise ConflictError(
                f"node {beat.node_id} is in {_group_name(state.group_id)}, "
                f"not in {_group_name(beat.group_id)}",
                group_id=state.group_id,
            )
        now = self.clock()
        if now - state.last_seen > self.node_ttl:
            self._invalidate()  # a dead member came back: live counts changed
        state.last_seen = now
        self._pending[beat.node_id] = (
            now,
            beat.accuracy,
            beat.loss,
            beat.num_samples,
            beat.round,
            _fid_in(beat.flower_node_id),
            beat.node_id,
        )
        return state.group_id

    async def get_node(self, *, node_id: int) -> Row:
        row = await self._read(_select_node, node_id, self.node_ttl)
        if row is None:
            raise NotFoundError(f"node {node_id} not found")
        return row

    async def list_nodes(self, *, group_id: int | None, alive: bool | None) -> list[Row]:
        return await self._read(_select_nodes, group_id, alive, self.node_ttl)

    # -- groups -----------------------------------------------------------------------------

    async def create_group(self, *, spec: GroupSpec, token: str | None) -> GroupCreatedRecord:
        """Create a group, as the node owning ``token`` or as an operator (``None``)."""
        creator = None
        if token is not None:
            creator = self._node_for_token(token)
        group_token = secrets.token_urlsafe(32)
        invite = secrets.token_urlsafe(12) if spec.join_policy == "invite-only" else None
        token_hash = hash_secret(group_token)
        invite_hash = hash_secret(invite) if invite else None
        group_id = await self._write(_insert_group, spec, token_hash, invite_hash, creator)
        self._group_tokens[group_id] = token_hash
        self._invalidate()
        return GroupCreatedRecord(group_id=group_id, group_token=group_token, invite_code=invite)

    def _node_for_token(self, token: str) -> int:
        node_id = self._by_token.get(hash_secret(token))
        if node_id is None:
            raise ForbiddenError("token does not belong to a registered node")
        return node_id

    async def list_groups(
        self,
        *,
        task: str | None,
        has_capacity: bool | None,
        limit: int,
        offset: int,
        include_dead: bool,
    ) -> list[Row]:
        """Groups best first; live ones come from a snapshot at most ``max_age`` old.

        For live groups the same query returns the same list object while the snapshot
        holds, so a caller may cache what it derived from it (the route caches the JSON).
        """
        if include_dead:
            groups = await self._read(_select_groups, True, self.node_ttl, self.group_ttl)
            return _filter_groups(groups, task, has_capacity)[offset : offset + limit]
        groups = await self._live_groups()
        key = (task, has_capacity, limit, offset)
        view = self._views.get(key)
        if view is None:
            view = _filter_groups(groups, task, has_capacity)[offset : offset + limit]
            self._views[key] = view
        return view

    async def _live_groups(self) -> list[Row]:
        snapshot = self._snapshot
        if snapshot is not None and self.clock() - snapshot[0] <= self.max_age:
            return snapshot[1]
        started = time.perf_counter()
        groups = await self._read(_select_groups, False, *self._ttls())
        self._snapshot = (self.clock(), groups)
        self._views = {}
        elapsed_ms = 1000 * (time.perf_counter() - started)
        logger.debug("discovery snapshot: %d groups in %.1f ms", len(groups), elapsed_ms)
        return groups

    async def get_group(self, *, group_id: int) -> Row:
        row = await self._read(_select_group_detail, group_id, self.node_ttl, self.group_ttl)
        if row is None:
            raise NotFoundError(f"group {group_id} not found")
        return row

    async def join(
        self,
        *,
        group_id: int,
        node_id: int,
        token: str,
        invite_code: str | None,
        flower_node_id: int | None,
    ) -> None:
        self._auth_node(node_id, token)
        args = (group_id, node_id, invite_code, _fid_in(flower_node_id), self._ttls())
        now = await self._write(_join, *args)
        self._node_moved(node_id, group_id, now)

    async def leave(self, *, group_id: int, node_id: int, token: str) -> None:
        self._auth_node(node_id, token)
        now = await self._write(_leave, group_id, node_id, self.node_ttl)
        self._node_moved(node_id, None, now)

    async def migrate(
        self,
        *,
        node_id: int,
        token: str,
        to_group_id: int,
        invite_code: str | None,
        reason: str,
        expected_gain: float,
    ) -> int | None:
        """Leave + join in one transaction; returns the group the node came from."""
        self._auth_node(node_id, token)
        move = (to_group_id, invite_code, reason, expected_gain)
        from_group, now = await self._write(_migrate, node_id, move, self._ttls())
        self._node_moved(node_id, to_group_id, now)
        return from_group

    def _ttls(self) -> tuple[float, float]:
        return (self.node_ttl, self.group_ttl)

    # -- coordinator ------------------------------------------------------------------------

    async def group_heartbeat(self, *, group_id: int, token: str) -> None:
        self._auth_group(group_id, token)
        await self._write(_touch_group, group_id)
        self._invalidate()

    async def report_round(self, *, group_id: int, token: str, report: RoundReport) -> None:
        self._auth_group(group_id, token)
        await self._write(_insert_round, group_id, report)
        self._invalidate()

    async def put_model(self, *, group_id: int, token: str, model: Model) -> None:
        self._auth_group(group_id, token)
        await self._write(_upsert_model, group_id, model)
        self._invalidate()

    async def get_model(self, *, group_id: int) -> Model:
        if group_id not in self._group_tokens:
            raise NotFoundError(f"group {group_id} not found")
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(self._blobs, self._read_model, group_id)
        if model is None:
            raise NotFoundError(f"group {group_id} has no model yet")
        return model

    def _read_model(self, group_id: int) -> Model | None:
        return _select_model(self._blob_connection(), self.clock(), group_id)

    # -- liveness sweep, events -------------------------------------------------------------

    async def sweep(self) -> None:
        """Mark groups whose coordinator went silent failed; dissolve groups left empty."""
        failed, dissolved = await self._write(_sweep, self._ttls())
        for group_id, members in dissolved:
            self._detached(group_id, members)
        if failed or dissolved:
            logger.info("sweep: %d groups failed, %d dissolved", len(failed), len(dissolved))
            self._invalidate()

    async def close_group(self, *, group_id: int, token: str) -> None:
        """The group's host stops it: dissolve it now (idempotent), members re-home."""
        self._auth_group(group_id, token)
        members = await self._write(_close_group, group_id)
        self._detached(group_id, members)
        self._invalidate()

    def _detached(self, group_id: int, members: list[int]) -> None:
        for node_id in members:
            state = self._nodes.get(node_id)
            if state is not None and state.group_id == group_id:
                state.group_id = None

    async def events(self, *, since: int, limit: int) -> list[Row]:
        return await self._read(_select_events, since, limit)

    async def stats(self) -> NetworkStats:
        return await self._read(select_stats, *self._ttls())


def _filter_groups(groups: list[Row], task: str | None, has_capacity: bool | None) -> list[Row]:
    if task is not None:
        groups = [g for g in groups if g["task"] == task]
    if has_capacity is not None:
        groups = [g for g in groups if (g["num_members"] < g["max_capacity"]) == has_capacity]
    return groups


# -- changes, run inside one transaction: fn(conn, now, *args) -----------------------------


def _insert_node(
    conn: sqlite3.Connection,
    now: float,
    name: str,
    address: str | None,
    num_samples: int,
    task: str,
    token_hash: str,
) -> tuple[int, float]:
    cur = conn.execute(
        "INSERT INTO nodes (name, address, task, num_samples, token_hash, last_seen, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, address, task, num_samples, token_hash, now, now),
    )
    node_id = int(cur.lastrowid or 0)
    _event(conn, "node_registered", now, node_id=node_id, name=name, task=task)
    return node_id, now


def _node_row(conn: sqlite3.Connection, node_id: int) -> sqlite3.Row:
    row = conn.execute(
        "SELECT id, group_id, last_seen FROM nodes WHERE id = ?", (node_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"node {node_id} not found")
    return row


def _detach(conn: sqlite3.Connection, now: float, node: sqlite3.Row, node_ttl: float) -> None:
    """Take a node out of its group; the group counts as live now if the node was."""
    conn.execute("UPDATE nodes SET group_id = NULL WHERE id = ?", (node["id"],))
    if node["group_id"] is not None and now - node["last_seen"] <= node_ttl:
        conn.execute(
            "UPDATE groups SET last_live_at = MAX(last_live_at, ?) WHERE id = ?",
            (now, node["group_id"]),
        )


def _delete_node(conn: sqlite3.Connection, now: float, node_id: int, node_ttl: float) -> None:
    node = _node_row(conn, node_id)
    _detach(conn, now, node, node_ttl)
    conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
    _event(conn, "node_deleted", now, node_id=node_id, group_id=node["group_id"])


def _insert_group(
    conn: sqlite3.Connection,
    now: float,
    spec: GroupSpec,
    token_hash: str,
    invite_hash: str | None,
    creator: int | None,
) -> int:
    cur = conn.execute(
        "INSERT INTO groups (name, fleet_address, task, max_capacity, join_policy, "
        "performance_threshold, token_hash, invite_hash, last_report, last_live_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            spec.name,
            spec.fleet_address,
            spec.task,
            spec.max_capacity,
            spec.join_policy,
            spec.performance_threshold,
            token_hash,
            invite_hash,
            now,
            now,
            now,
        ),
    )
    group_id = int(cur.lastrowid or 0)
    _event(conn, "group_created", now, group_id=group_id, name=spec.name, by_node_id=creator)
    return group_id


def _joinable_group(
    conn: sqlite3.Connection,
    now: float,
    group_id: int,
    node_id: int,
    invite_code: str | None,
    ttls: tuple[float, float],
) -> sqlite3.Row:
    """The group row if ``node_id`` may join it now; raises the refusal otherwise."""
    node_ttl, group_ttl = ttls
    group = conn.execute(
        "SELECT id, status, max_capacity, join_policy, invite_hash, last_report "
        "FROM groups WHERE id = ?",
        (group_id,),
    ).fetchone()
    if group is None:
        raise NotFoundError(f"group {group_id} not found")
    if group["status"] != "active" or now - group["last_report"] > group_ttl:
        status = group["status"] if group["status"] != "active" else "not reporting"
        raise ConflictError(f"group {group_id} is {status}; it takes no members")
    if group["join_policy"] == "invite-only" and not _matches(invite_code, group["invite_hash"]):
        raise ForbiddenError(f"group {group_id} is invite-only: a valid invite_code is needed")
    members = conn.execute(
        "SELECT COUNT(*) FROM nodes WHERE group_id = ? AND last_seen >= ? AND id != ?",
        (group_id, now - node_ttl, node_id),
    ).fetchone()[0]
    if members >= group["max_capacity"]:
        raise ConflictError(f"group {group_id} is full ({members}/{group['max_capacity']})")
    return group


def _attach(
    conn: sqlite3.Connection, now: float, node_id: int, group_id: int, fid: str | None
) -> None:
    conn.execute(
        "UPDATE nodes SET group_id = ?, last_seen = ?, "
        "flower_node_id = COALESCE(?, flower_node_id) WHERE id = ?",
        (group_id, now, fid, node_id),
    )
    conn.execute("UPDATE groups SET last_live_at = ? WHERE id = ?", (now, group_id))


def _join(
    conn: sqlite3.Connection,
    now: float,
    group_id: int,
    node_id: int,
    invite_code: str | None,
    fid: str | None,
    ttls: tuple[float, float],
) -> float:
    node = _node_row(conn, node_id)
    if node["group_id"] is not None and node["group_id"] != group_id:
        raise ConflictError(
            f"node {node_id} is in group {node['group_id']}: leave or migrate first",
            group_id=node["group_id"],
        )
    _joinable_group(conn, now, group_id, node_id, invite_code, ttls)
    _attach(conn, now, node_id, group_id, fid)
    if node["group_id"] is None:
        _event(conn, "joined", now, node_id=node_id, group_id=group_id)
    return now


def _leave(
    conn: sqlite3.Connection, now: float, group_id: int, node_id: int, node_ttl: float
) -> float:
    node = _node_row(conn, node_id)
    if node["group_id"] != group_id:
        raise ConflictError(
            f"node {node_id} is not a member of group {group_id}", group_id=node["group_id"]
        )
    _detach(conn, now, node, node_ttl)
    _event(conn, "left", now, node_id=node_id, group_id=group_id)
    return now


def _migrate(
    conn: sqlite3.Connection,
    now: float,
    node_id: int,
    move: tuple[int, str | None, str, float],
    ttls: tuple[float, float],
) -> tuple[int | None, float]:
    to_group_id, invite_code, reason, expected_gain = move
    node = _node_row(conn, node_id)
    if node["group_id"] == to_group_id:
        raise ConflictError(
            f"node {node_id} is already in group {to_group_id}", group_id=to_group_id
        )
    _joinable_group(conn, now, to_group_id, node_id, invite_code, ttls)
    _detach(conn, now, node, ttls[0])
    _attach(conn, now, node_id, to_group_id, None)
    _event(
        conn,
        "migrated",
        now,
        node_id=node_id,
        group_id=to_group_id,
        from_group_id=node["group_id"],
        to_group_id=to_group_id,
        reason=reason,
        expected_gain=expected_gain,
    )
    return node["group_id"], now


def _reporting_group(conn: sqlite3.Connection, now: float, group_id: int) -> None:
    """Refresh a group's last_report (a failed group whose coordinator is back is active)."""
    status = conn.execute("SELECT status FROM groups WHERE id = ?", (group_id,)).fetchone()
    if status is None:
        raise NotFoundError(f"group {group_id} not found")
    if status[0] == "dissolved":
        raise ConflictError(f"group {group_id} is dissolved")
    conn.execute(
        "UPDATE groups SET last_report = ?, status = 'active' WHERE id = ?", (now, group_id)
    )


def _touch_group(conn: sqlite3.Connection, now: float, group_id: int) -> None:
    _reporting_group(conn, now, group_id)


def _insert_round(conn: sqlite3.Connection, now: float, group_id: int, r: RoundReport) -> None:
    _reporting_group(conn, now, group_id)
    conn.execute(
        "INSERT INTO rounds (group_id, round, accuracy, loss, num_nodes, num_examples, "
        "reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (group_id, r.round, r.accuracy, r.loss, r.num_nodes, r.num_examples, now),
    )
    conn.execute(
        "UPDATE groups SET accuracy = ?, loss = ?, round = ? WHERE id = ?",
        (r.accuracy, r.loss, r.round, group_id),
    )


def _upsert_model(conn: sqlite3.Connection, now: float, group_id: int, model: Model) -> None:
    _reporting_group(conn, now, group_id)
    conn.execute(
        "INSERT INTO models (group_id, sha256, data, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(group_id) DO UPDATE SET sha256 = excluded.sha256, data = excluded.data, "
        "updated_at = excluded.updated_at",
        (group_id, model.sha256, sqlite3.Binary(model.data), now),
    )
    conn.execute("UPDATE groups SET model_sha256 = ? WHERE id = ?", (model.sha256, group_id))


def _sweep(
    conn: sqlite3.Connection, now: float, ttls: tuple[float, float]
) -> tuple[list[int], list[tuple[int, list[int]]]]:
    node_ttl, group_ttl = ttls
    cut = now - group_ttl
    failed = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM groups WHERE status = 'active' AND last_report < ?", (cut,)
        )
    ]
    for group_id in failed:
        conn.execute("UPDATE groups SET status = 'failed' WHERE id = ?", (group_id,))
        _event(conn, "group_failed", now, group_id=group_id, silent_for=group_ttl)
    empty = [
        r[0]
        for r in conn.execute(
            "SELECT g.id FROM groups g WHERE g.status != 'dissolved' AND g.last_live_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.group_id = g.id "
            "AND n.last_seen >= ?)",
            (cut, cut - node_ttl),
        )
    ]
    dissolved = [(group_id, _dissolve(conn, now, group_id, "no live member")) for group_id in empty]
    return failed, dissolved


def _dissolve(conn: sqlite3.Connection, now: float, group_id: int, reason: str) -> list[int]:
    """Detach every member (evicted events), mark the group dissolved; returns the members."""
    members = [r[0] for r in conn.execute("SELECT id FROM nodes WHERE group_id = ?", (group_id,))]
    conn.execute("UPDATE nodes SET group_id = NULL WHERE group_id = ?", (group_id,))
    conn.execute("UPDATE groups SET status = 'dissolved' WHERE id = ?", (group_id,))
    for node_id in members:
        _event(conn, "evicted", now, node_id=node_id, group_id=group_id, reason="dissolved")
    _event(conn, "dissolved", now, group_id=group_id, detached=members, reason=reason)
    return members


def _close_group(conn: sqlite3.Connection, now: float, group_id: int) -> list[int]:
    status = conn.execute("SELECT status FROM groups WHERE id = ?", (group_id,)).fetchone()
    if status is not None and status[0] == "dissolved":
        return []
    return _dissolve(conn, now, group_id, "closed by its host")


# -- reads: fn(conn, now, *args) -------------------------------------------------------------


def _node_out(row: sqlite3.Row, now: float, node_ttl: float) -> Row:
    return {
        "node_id": row["id"],
        "name": row["name"],
        "address": row["address"],
        "task": row["task"],
        "num_samples": row["num_samples"],
        "group_id": row["group_id"],
        "flower_node_id": _fid_out(row["flower_node_id"]),
        "accuracy": row["accuracy"],
        "loss": row["loss"],
        "round": row["round"],
        "last_seen": row["last_seen"],
        "alive": now - row["last_seen"] <= node_ttl,
        "created_at": row["created_at"],
    }


def _select_node(conn: sqlite3.Connection, now: float, node_id: int, ttl: float) -> Row | None:
    row = conn.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
    return _node_out(row, now, ttl) if row is not None else None


def _select_nodes(
    conn: sqlite3.Connection, now: float, group_id: int | None, alive: bool | None, ttl: float
) -> list[Row]:
    where, params = [], []
    if group_id is not None:
        where.append("group_id = ?")
        params.append(group_id)
    if alive is not None:
        where.append("last_seen >= ?" if alive else "last_seen < ?")
        params.append(now - ttl)
    sql = f"SELECT {NODE_COLUMNS} FROM nodes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_node_out(r, now, ttl) for r in conn.execute(sql + " ORDER BY id", params)]


def _group_out(row: sqlite3.Row, now: float, group_ttl: float) -> Row:
    return {
        "group_id": row["id"],
        "name": row["name"],
        "fleet_address": row["fleet_address"],
        "task": row["task"],
        "max_capacity": row["max_capacity"],
        "join_policy": row["join_policy"],
        "performance_threshold": row["performance_threshold"],
        "status": row["status"],
        "alive": row["status"] == "active" and now - row["last_report"] <= group_ttl,
        "num_members": row["num_members"],
        "accuracy": row["accuracy"],
        "loss": row["loss"],
        "round": row["round"],
        "has_model": row["model_sha256"] is not None,
        "model_sha256": row["model_sha256"],
        "last_report": row["last_report"],
        "created_at": row["created_at"],
    }


def _select_groups(
    conn: sqlite3.Connection, now: float, include_dead: bool, node_ttl: float, group_ttl: float
) -> list[Row]:
    """Groups best first: accuracy desc (none last), live members desc, id."""
    sql = f"SELECT {GROUP_COLUMNS}, {LIVE_MEMBERS} AS num_members FROM groups g"
    if not include_dead:
        sql += " WHERE g.status = 'active' AND g.last_report >= :report_cut"
    sql += " ORDER BY g.accuracy IS NULL, g.accuracy DESC, num_members DESC, g.id"
    params = {"alive_cut": now - node_ttl, "report_cut": now - group_ttl}
    return [_group_out(r, now, group_ttl) for r in conn.execute(sql, params)]


def _select_group_detail(
    conn: sqlite3.Connection, now: float, group_id: int, node_ttl: float, group_ttl: float
) -> Row | None:
    params = {"alive_cut": now - node_ttl, "id": group_id}
    sql = f"SELECT {GROUP_COLUMNS}, {LIVE_MEMBERS} AS num_members FROM groups g WHERE g.id = :id"
    row = conn.execute(sql, params).fetchone()
    if row is None:
        return None
    detail = _group_out(row, now, group_ttl)
    detail["members"] = _select_nodes(conn, now, group_id, None, node_ttl)
    rounds = conn.execute(
        "SELECT round, accuracy, loss, num_nodes, num_examples, reported_at FROM rounds "
        "WHERE group_id = ? ORDER BY id DESC LIMIT ?",
        (group_id, ROUNDS_IN_DETAIL),
    ).fetchall()
    detail["rounds"] = [dict(r) for r in reversed(rounds)]
    return detail


def _select_model(conn: sqlite3.Connection, now: float, group_id: int) -> Model | None:
    row = conn.execute("SELECT sha256, data FROM models WHERE group_id = ?", (group_id,)).fetchone()
    return Model(sha256=row[0], data=bytes(row[1])) if row is not None else None


def _select_events(conn: sqlite3.Connection, now: float, since: int, limit: int) -> list[Row]:
    rows = conn.execute(
        "SELECT id, type, at, node_id, group_id, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (since, limit),
    )
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]
