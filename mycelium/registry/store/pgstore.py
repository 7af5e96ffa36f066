"""PgStore: :class:`~.store.Store` over PostgreSQL, for several registry processes.

What the SQLite store keeps in memory (the token mirror) would let another process's
change slip past this one (a deleted node's token, a group's membership), so here every
check reads the database: a node's token and group when it acts, a group's token when its
host acts, a heartbeat in one ``UPDATE ... WHERE id AND token AND group`` (a sha256 of a
256-bit token compared in SQL: its timing tells nothing about the token). What stays in
memory is per process and only ages: the discovery snapshot (at most ``max_age`` old).

One process sweeps at a time (the advisory lock of :class:`~.postgres.PgEngine`); the
others read the self-preservation state it records, so every process freezes the same cuts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from mycelium.registry.store import reads, writes
from mycelium.registry.store.errors import ConflictError, ForbiddenError, NotFoundError
from mycelium.registry.store.pgbeats import BATCH_SQL, Beat, BeatBatcher, batch_parameters
from mycelium.registry.store.postgres import PgEngine
from mycelium.registry.store.records import Heartbeat
from mycelium.registry.store.store import Store, _group_name, _NodeState
from mycelium.registry.store.writes import hash_secret, matches

logger = logging.getLogger(__name__)

PRESERVING = "preserving_since"


class PgStore(Store):
    """The registry's data in one PostgreSQL database shared by any number of processes."""

    def __init__(self, url: str, **options: Any) -> None:
        self._pg = PgEngine(url, clock=options.get("clock", time.time))
        self._beats = BeatBatcher(
            lambda beats: self._pg.beat_batch(BATCH_SQL, batch_parameters(beats))
        )
        super().__init__(None, engine=self._pg, **options)

    def _load_mirror(self, conn: Any) -> None:
        logger.info("store %s (PostgreSQL, shared by every registry process)", self._pg.where)

    # -- checks against the database --------------------------------------------------------

    def _auth_node(self, node_id: int, token: str) -> _NodeState:
        found = self._pg.lookup(reads.select_node_auth, node_id)
        if found is None:
            raise NotFoundError(f"node {node_id} not found")
        token_hash, group_id, last_seen = found
        if not matches(token, token_hash):
            raise ForbiddenError(f"token is not valid for node {node_id}")
        return _NodeState(token_hash, group_id, last_seen)

    def _auth_group(self, group_id: int, token: str) -> None:
        stored = self._pg.lookup(reads.select_group_token, group_id)
        if stored is None:
            raise NotFoundError(f"group {group_id} not found")
        if not matches(token, stored):
            raise ForbiddenError(f"token is not valid for group {group_id}")

    def _creator(self, token: str) -> int | None:
        if matches(token, self._operator_hash):
            return None
        node_id = self._pg.lookup(reads.select_node_by_token, hash_secret(token))
        if node_id is None:
            raise ForbiddenError("token is neither a registered node's nor the operator's")
        return node_id

    def _group_known(self, group_id: int) -> bool:
        return self._pg.lookup(reads.select_group_token, group_id) is not None

    def _remember_node(self, node_id: int, state: _NodeState) -> None:
        """Nothing is mirrored: the next check reads the database."""

    def _remember_group(self, group_id: int, token_hash: str) -> None:
        """Nothing is mirrored: the next check reads the database."""

    def _write_beats(self, beats: Sequence[Beat]) -> set[int]:
        return self._pg.beat_batch(BATCH_SQL, batch_parameters(beats))

    async def heartbeat(self, *, beat: Heartbeat, token: str) -> int | None:
        """Written in the next batch (:mod:`.pgbeats`); refused as the SQLite store refuses."""
        values = (*reads.beat_values(beat, self.clock()), hash_secret(token), beat.group_id)
        if await self._beats.submit(values):
            return beat.group_id
        state = self._auth_node(beat.node_id, token)  # not found, forbidden, or elsewhere
        raise ConflictError(
            f"node {beat.node_id} is in {_group_name(state.group_id)}, "
            f"not in {_group_name(beat.group_id)}",
            group_id=state.group_id,
        )

    async def check(self) -> None:
        """The database answers one statement, else :class:`StoreUnavailable` (a 503)."""
        self._pg.lookup(reads.ping)

    @property
    def sweeping(self) -> bool:
        return self._pg.sweeping

    # -- one sweeper ------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Sweep if this process holds the sweep lock (taking it if free); otherwise follow
        the self-preservation state the sweeping process records."""
        was_leading = self._pg.sweeping
        if not self._pg.lead():
            since = self._pg.lookup(reads.select_state, PRESERVING)
            if since != self.watch.preserving_since:
                self.watch = dataclasses.replace(self.watch, preserving_since=since)
                self._invalidate()
            return
        if not was_leading:
            self._swept_at = None  # just took over: no lateness of its own to credit
        before = self.watch.preserving_since
        await super().sweep()
        if self.watch.preserving_since != before:
            await self._pg.write(writes.set_state, PRESERVING, self.watch.preserving_since)
