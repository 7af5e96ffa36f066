"""Heartbeats to PostgreSQL in batches: group commit, as SQLite's queue does for one process.

One heartbeat per statement costs a round trip, a statement and a commit each; a registry
process then holds about 1,300 heartbeats/s at 10,000 nodes on two cores, with a p99 of
seconds while the event loop waits on each statement. Here the beats that arrive while one
batch is being written are written together by the next: one ``UPDATE ... FROM unnest(...)``
checked row by row in SQL (id, token hash, group), on the heartbeat connection, in a worker
thread so the event loop goes on reading requests meanwhile. No timer: a lone beat is written
at once; under load batches grow by themselves (``docs/registry.md`` has the figures).

Each beat still gets its own answer: written (its row returned), or refused, and then the
store finds out why (not found, wrong token, another group) as for a single beat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from mycelium.registry.store.schema import FLUSH_SQL

logger = logging.getLogger(__name__)

BEAT_FIELDS = (
    ("last_seen", "float8"),
    ("accuracy", "float8"),
    ("loss", "float8"),
    ("num_samples", "int8"),
    ("round", "int8"),
    ("fid", "text"),
    ("personal_accuracy", "float8"),
    ("id", "int8"),
    ("token_hash", "text"),
    ("group_id", "int8"),
)
"""One beat's parameters: :data:`~.schema.FLUSH_SQL`'s, then the token hash and group."""

BATCH_SQL = (
    "UPDATE nodes AS n SET last_seen = b.last_seen, "
    "accuracy = COALESCE(b.accuracy, n.accuracy), loss = COALESCE(b.loss, n.loss), "
    "num_samples = b.num_samples, round = COALESCE(b.round, n.round), "
    "flower_node_id = COALESCE(b.fid, n.flower_node_id), "
    "personal_accuracy = b.personal_accuracy "
    "FROM unnest("
    + ", ".join(f"%s::{kind}[]" for _, kind in BEAT_FIELDS)
    + ") AS b("
    + ", ".join(name for name, _ in BEAT_FIELDS)
    + ") WHERE n.id = b.id AND n.token_hash = b.token_hash "
    "AND n.group_id IS NOT DISTINCT FROM b.group_id RETURNING n.id"
)
"""Every beat of a batch in one statement; the ids it wrote come back."""

assert FLUSH_SQL.count("?") + 2 == len(BEAT_FIELDS), "BATCH_SQL must follow FLUSH_SQL"

NODE_ID = 7  # where a beat's node id is in its parameters
Beat = tuple[Any, ...]
WriteBatch = Callable[[Sequence[Beat]], set[int]]


def batch_parameters(beats: Sequence[Beat]) -> list[list[Any]]:
    """:data:`BATCH_SQL`'s parameters: one array per field."""
    return [list(column) for column in zip(*beats, strict=True)]


class BeatBatcher:
    """Collects beats while a batch is written; each caller learns if its beat was written.

    ``write`` runs in a worker thread, one batch at a time, and returns the node ids it
    wrote. A node's second beat in the same batch replaces its first (the later one wins,
    as in SQLite's queue) when token and group are the same; otherwise it waits for the
    next batch. An error of ``write`` is every waiting caller's error.
    """

    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        self._pending: dict[int, tuple[Beat, list[asyncio.Future[bool]]]] = {}
        self._later: list[tuple[Beat, asyncio.Future[bool]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0
        self.beats = 0

    async def submit(self, beat: Beat) -> bool:
        """Queue ``beat``; True once it is written, False if the database refused it."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._add(beat, future)
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    def _add(self, beat: Beat, future: asyncio.Future[bool]) -> None:
        node_id = beat[NODE_ID]
        queued = self._pending.get(node_id)
        if queued is None:
            self._pending[node_id] = (beat, [future])
        elif queued[0][NODE_ID + 1 :] == beat[NODE_ID + 1 :]:
            self._pending[node_id] = (beat, [*queued[1], future])
        else:
            self._later.append((beat, future))

    async def _drain(self) -> None:
        try:
            while self._pending or self._later:
                batch, self._pending = self._pending, {}
                later, self._later = self._later, []  # beats that must follow this batch
                await self._write_one(batch)
                for beat, future in later:
                    self._add(beat, future)
        finally:
            self._draining = None

    async def _write_one(self, batch: dict[int, tuple[Beat, list[asyncio.Future[bool]]]]) -> None:
        if not batch:
            return
        try:
            written = await asyncio.to_thread(self._write, [beat for beat, _ in batch.values()])
        except Exception as exc:  # the database's error is each caller's (a 503 for each)
            for _, futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        self.batches += 1
        self.beats += len(batch)
        for node_id, (_, futures) in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(node_id in written)


__all__ = ["BATCH_SQL", "Beat", "BeatBatcher", "batch_parameters"]
