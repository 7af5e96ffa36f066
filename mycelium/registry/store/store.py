"""Store: the registry's keyword-only async API over the SQLite engine (the PostgreSQL
store, :mod:`.pgstore`, is this class with the mirror replaced by the database).

* Tokens are checked against an in-memory mirror of (token hash, group, last_seen) per node
  and the token hash per group, loaded at open and updated after each commit.
* A heartbeat is checked against the mirror, answered at once and queued in the engine.
* Discovery (``list_groups``) is answered from a snapshot of live groups rebuilt after any
  change, and at most ``max_age`` seconds old (liveness changes with time alone).
* Liveness is derived at read time from ``last_seen`` / ``last_alive`` and one clock; the
  sweeper (``liveness``) discounts the registry's own outages, holds expiry in
  self-preservation and lets members vouch for a group whose host went silent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycelium import config
from mycelium.dashboard.sources import LogDigest, NetworkStats
from mycelium.registry.store import digest, liveness, reads, writes
from mycelium.registry.store.engine import Clock, Engine
from mycelium.registry.store.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StoreUnavailable,
)
from mycelium.registry.store.interface import EngineLike
from mycelium.registry.store.records import (
    GroupCreatedRecord,
    GroupSpec,
    Heartbeat,
    Model,
    NodeCreatedRecord,
    RoundReport,
    Row,
)
from mycelium.registry.store.writes import hash_secret, matches

logger = logging.getLogger(__name__)


@dataclass
class _NodeState:
    """Mirror of the columns a heartbeat needs (mutable, event loop thread only)."""

    token_hash: str
    group_id: int | None
    last_seen: float


def _new_secret(idempotency_key: str | None, label: str, chars: int) -> str:
    """A random secret, or the one derived from the request's idempotency key."""
    if idempotency_key is None:
        return secrets.token_urlsafe(chars * 3 // 4)
    return writes.derive_secret(idempotency_key, label, chars)


def _key_hash(idempotency_key: str | None) -> str | None:
    return None if idempotency_key is None else hash_secret(idempotency_key)


def _group_name(group_id: int | None) -> str:
    return f"group {group_id}" if group_id is not None else "no group"


class Store:
    """The registry's data on one SQLite file; every method runs on the event loop."""

    def __init__(
        self,
        db_path: Path | None,
        *,
        node_ttl: float,
        group_ttl: float,
        clock: Clock = time.time,
        flush_interval: float = config.REGISTRY_FLUSH_INTERVAL_S,
        checkpoint_interval: float = 5.0,
        operator_token_hash: str | None = None,
        max_groups_per_node: int = config.MAX_GROUPS_PER_NODE,
        monotonic: Clock = time.monotonic,
        preservation: liveness.Preservation | None = None,
        engine: EngineLike | None = None,
    ) -> None:
        self.node_ttl = node_ttl
        self.group_ttl = group_ttl
        self.max_groups_per_node = max_groups_per_node
        self._operator_hash = operator_token_hash
        self.clock = clock
        self.monotonic = monotonic
        self.preservation = preservation or liveness.Preservation()
        self.watch = liveness.Watch()
        self._swept_at: float | None = None  # monotonic time of the last sweep
        self._sweep_interval = 1.0
        self.max_age = min(1.0, node_ttl / 4, group_ttl / 4)
        self._engine: EngineLike = engine or Engine(
            Path(db_path or ""),
            clock=clock,
            flush_interval=flush_interval,
            checkpoint_interval=checkpoint_interval,
        )
        self._nodes: dict[int, _NodeState] = {}
        self._by_token: dict[str, int] = {}
        self._group_tokens: dict[int, str] = {}
        self._snapshot: tuple[float, list[Row]] | None = None
        self._views: dict[tuple[Any, ...], list[Row]] = {}

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the schema (WAL mode), load the mirror, start the background work."""
        conn = self._engine.open()
        away = await self._engine.write(liveness.credit_restart, config.OUTAGE_MIN_S)
        if away:
            logger.warning("registry was away %.1f s: credited to every node and group", away)
        self._load_mirror(conn)
        self._engine.start()

    def _load_mirror(self, conn: Any) -> None:
        nodes, groups = reads.load_mirror(conn)
        for node_id, token_hash, group_id, last_seen in nodes:
            self._nodes[node_id] = _NodeState(token_hash, group_id, last_seen)
            self._by_token[token_hash] = node_id
        self._group_tokens = {group_id: token_hash for group_id, token_hash in groups}
        path, n_nodes, n_groups = self._engine.where, len(self._nodes), len(groups)
        logger.info("store %s: %d nodes, %d groups", path, n_nodes, n_groups)

    async def close(self) -> None:
        """Commit queued heartbeats, checkpoint and close."""
        await self._engine.close()

    async def flush(self) -> None:
        """Commit queued heartbeats now."""
        await self._engine.flush()

    def _ttls(self) -> writes.Ttls:
        """(node_ttl, group_ttl), stretched while self-preservation holds the cuts."""
        return liveness.frozen_ttls((self.node_ttl, self.group_ttl), self.clock(), self.watch)

    @property
    def sweeping(self) -> bool:
        """True if this process runs the liveness sweep (SQLite: its only process does)."""
        return True

    async def check(self) -> None:
        """Nothing to check: the SQLite file is this process's own, open since start."""

    @property
    def preserving(self) -> bool:
        """True while self-preservation holds (nothing expires, no group fails)."""
        return self.watch.preserving_since is not None

    def _invalidate(self) -> None:
        self._snapshot = None
        self._views = {}

    # -- auth against the mirror ------------------------------------------------------------

    def _auth_node(self, node_id: int, token: str) -> _NodeState:
        state = self._nodes.get(node_id)
        if state is None:
            raise NotFoundError(f"node {node_id} not found")
        if not matches(token, state.token_hash):
            raise ForbiddenError(f"token is not valid for node {node_id}")
        return state

    def _auth_group(self, group_id: int, token: str) -> None:
        stored = self._group_tokens.get(group_id)
        if stored is None:
            raise NotFoundError(f"group {group_id} not found")
        if not matches(token, stored):
            raise ForbiddenError(f"token is not valid for group {group_id}")

    def _group_known(self, group_id: int) -> bool:
        return group_id in self._group_tokens

    def _remember_node(self, node_id: int, state: _NodeState) -> None:
        self._nodes[node_id] = state
        self._by_token[state.token_hash] = node_id

    def _forget_node(self, node_id: int) -> None:
        state = self._nodes.pop(node_id, None)
        if state is not None:
            self._by_token.pop(state.token_hash, None)

    def _remember_group(self, group_id: int, token_hash: str) -> None:
        self._group_tokens[group_id] = token_hash

    def _node_moved(self, node_id: int, group_id: int | None, now: float) -> None:
        state = self._nodes.get(node_id)
        if state is not None:
            state.group_id = group_id
            state.last_seen = now
        self._invalidate()

    def _detached(self, group_id: int, members: list[int]) -> None:
        for node_id in members:
            state = self._nodes.get(node_id)
            if state is not None and state.group_id == group_id:
                state.group_id = None

    # -- nodes ------------------------------------------------------------------------------

    async def create_node(
        self,
        *,
        name: str,
        address: str | None,
        num_samples: int,
        task: str,
        idempotency_key: str | None = None,
    ) -> NodeCreatedRecord:
        """Register a node. With ``idempotency_key`` its token is derived from the key and a
        request with the same key again is answered with the same node and token."""
        token = _new_secret(idempotency_key, "node-token", 43)
        token_hash = hash_secret(token)
        args = (name, address, num_samples, task, token_hash, _key_hash(idempotency_key))
        node_id, now, created = await self._engine.write(writes.insert_node, *args)
        if created or node_id not in self._nodes:
            self._remember_node(node_id, _NodeState(token_hash, None, now))
        self._invalidate()
        return NodeCreatedRecord(node_id=node_id, token=token)

    async def delete_node(self, *, node_id: int, token: str) -> None:
        self._auth_node(node_id, token)
        self._engine.pending.pop(node_id, None)
        await self._engine.write(writes.delete_node, node_id, self.node_ttl)
        self._forget_node(node_id)
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
        self._engine.pending[beat.node_id] = reads.beat_values(beat, now)
        return state.group_id

    async def get_node(self, *, node_id: int) -> Row:
        row = await self._engine.read(reads.select_node, node_id, self._ttls()[0])
        if row is None:
            raise NotFoundError(f"node {node_id} not found")
        return row

    async def list_nodes(self, *, group_id: int | None, alive: bool | None) -> list[Row]:
        return await self._engine.read(reads.select_nodes, group_id, alive, self._ttls()[0])

    # -- groups -----------------------------------------------------------------------------

    async def create_group(
        self, *, spec: GroupSpec, token: str, idempotency_key: str | None = None
    ) -> GroupCreatedRecord:
        """Create a group as the operator or as the node owning ``token`` (recorded as its
        creator, refused with :class:`LimitError` beyond ``max_groups_per_node`` live
        groups); the creator does not become a member. With ``idempotency_key`` the group
        token and invite code are derived from the key and a request with the same key
        again (same creator) is answered with the same group, token and invite code."""
        creator = self._creator(token)
        group_token = _new_secret(idempotency_key, "group-token", 43)
        invite = None
        if spec.join_policy == "invite-only":
            invite = _new_secret(idempotency_key, "invite-code", 16)
        token_hash = hash_secret(group_token)
        hashes = (token_hash, hash_secret(invite) if invite else None)
        allowance = (self.max_groups_per_node, self.group_ttl)
        args = (spec, hashes, creator, allowance, _key_hash(idempotency_key))
        group_id = await self._engine.write(writes.insert_group, *args)
        self._remember_group(group_id, token_hash)
        self._invalidate()
        return GroupCreatedRecord(group_id=group_id, group_token=group_token, invite_code=invite)

    def _creator(self, token: str) -> int | None:
        """The node owning ``token``, or None for the operator token."""
        if matches(token, self._operator_hash):
            return None
        node_id = self._by_token.get(hash_secret(token))
        if node_id is None:
            raise ForbiddenError("token is neither a registered node's nor the operator's")
        return node_id

    async def list_groups(
        self,
        *,
        task: str | None,
        has_capacity: bool | None,
        limit: int,
        offset: int,
        include_dead: bool,
        fingerprint: str | None = None,
        strategy: str | None = None,
    ) -> list[Row]:
        """Groups best first; live ones come from a snapshot at most ``max_age`` old.

        For live groups the same query returns the same list object while the snapshot
        holds, so a caller may cache what it derived from it (the route caches the JSON).
        """
        if include_dead:
            groups = await self._engine.read(reads.select_groups, True, *self._ttls())
            chosen = reads.filter_groups(groups, task, has_capacity, fingerprint, strategy)
            return chosen[offset : offset + limit]
        groups = await self._live_groups()
        key = (task, has_capacity, limit, offset, fingerprint, strategy)
        view = self._views.get(key)
        if view is None:
            chosen = reads.filter_groups(groups, task, has_capacity, fingerprint, strategy)
            view = chosen[offset : offset + limit]
            self._views[key] = view
        return view

    async def _live_groups(self) -> list[Row]:
        snapshot = self._snapshot
        if snapshot is not None and self.clock() - snapshot[0] <= self.max_age:
            return snapshot[1]
        started = time.perf_counter()
        groups = await self._engine.read(reads.select_groups, False, *self._ttls())
        self._snapshot = (self.clock(), groups)
        self._views = {}
        elapsed_ms = 1000 * (time.perf_counter() - started)
        logger.debug("discovery snapshot: %d groups in %.1f ms", len(groups), elapsed_ms)
        return groups

    async def get_group(self, *, group_id: int) -> Row:
        row = await self._engine.read(reads.select_group_detail, group_id, *self._ttls())
        if row is None:
            raise NotFoundError(f"group {group_id} not found")
        return row

    # -- membership -------------------------------------------------------------------------

    async def join(
        self,
        *,
        group_id: int,
        node_id: int,
        token: str,
        invite_code: str | None,
        flower_node_id: int | None,
        public_key: str | None = None,
    ) -> None:
        """Join (idempotent); ``public_key`` is the key of this membership (admission)."""
        self._auth_node(node_id, token)
        fid = reads.fid_in(flower_node_id)
        args = (group_id, node_id, invite_code, fid, self._ttls(), public_key)
        now = await self._engine.write(writes.join, *args)
        self._node_moved(node_id, group_id, now)

    async def leave(self, *, group_id: int, node_id: int, token: str) -> None:
        self._auth_node(node_id, token)
        now = await self._engine.write(writes.leave, group_id, node_id, self.node_ttl)
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
        public_key: str | None = None,
    ) -> int | None:
        """Leave + join in one transaction; returns the group the node came from."""
        self._auth_node(node_id, token)
        move = (to_group_id, invite_code, reason, expected_gain)
        args = (node_id, move, self._ttls(), public_key)
        from_group, now = await self._engine.write(writes.migrate, *args)
        self._node_moved(node_id, to_group_id, now)
        return from_group

    # -- admission (docs/security.md) -------------------------------------------------------

    async def set_public_key(self, *, node_id: int, token: str, public_key: str) -> None:
        """Only the node itself (its token) sets the key of its current membership."""
        self._auth_node(node_id, token)
        await self._engine.write(writes.set_public_key, node_id, public_key)

    async def admission(self, *, node_id: int, token: str) -> Row:
        """The node's admission receipt (its own token)."""
        self._auth_node(node_id, token)
        row = await self._engine.read(reads.select_admission, node_id)
        if row is None:
            raise NotFoundError(f"node {node_id} not found")
        return row

    async def group_members(self, *, group_id: int, token: str) -> list[Row]:
        """The members and their keys, for the group's host (group token)."""
        self._auth_group(group_id, token)
        return await self._engine.read(reads.select_members, group_id, self._ttls()[0])

    async def admit(
        self, *, group_id: int, token: str, node_id: int, public_key: str, flower_node_id: int
    ) -> None:
        """The host's receipt for a member's key (group token)."""
        self._auth_group(group_id, token)
        fid = str(flower_node_id)
        await self._engine.write(writes.admit, group_id, node_id, public_key, fid)
        self._invalidate()

    # -- the coordinator (group token) ------------------------------------------------------

    async def group_heartbeat(self, *, group_id: int, token: str) -> None:
        self._auth_group(group_id, token)
        await self._engine.write(writes.report, group_id)
        self._invalidate()

    async def report_round(self, *, group_id: int, token: str, report: RoundReport) -> None:
        self._auth_group(group_id, token)
        await self._engine.write(writes.insert_round, group_id, report)
        self._invalidate()

    async def model_spec(self, *, group_id: int, token: str) -> str | None:
        """The group's model spec (JSON) to check an upload against; None if it has none."""
        self._auth_group(group_id, token)
        return await self._engine.read(reads.select_model_spec, group_id)

    async def put_model(self, *, group_id: int, token: str, model: Model) -> None:
        self._auth_group(group_id, token)
        await self._engine.write(writes.upsert_model, group_id, model)
        self._invalidate()

    async def get_model(self, *, group_id: int) -> Model:
        """The latest model, read on the helper thread (a blob of up to the model limit)."""
        if not self._group_known(group_id):
            raise NotFoundError(f"group {group_id} not found")
        model = await self._engine.on_helper(reads.select_model, group_id)
        if model is None:
            raise NotFoundError(f"group {group_id} has no model yet")
        return model

    async def close_group(self, *, group_id: int, token: str) -> None:
        """The group's host stops it: dissolve it now (idempotent), members re-home."""
        self._auth_group(group_id, token)
        members = await self._engine.write(writes.close_group, group_id)
        self._detached(group_id, members)
        self._invalidate()

    # -- liveness sweep, events -------------------------------------------------------------

    async def sweep(self) -> None:
        """Credit the registry's own outage, update self-preservation, fail groups nobody
        shows training, dissolve groups left empty (see :mod:`.liveness`)."""
        result = await self._engine.write(liveness.sweep, self._sweep_job())
        self._swept_at = self.monotonic()
        was_preserving, self.watch = self.preserving, result.watch
        for group_id, members in result.dissolved:
            self._detached(group_id, list(members))
        if result.credited_s:
            self._credit_mirror(result.credited_s)
            logger.warning("sweep %.1f s late: the registry was away; credited", result.credited_s)
        if result.failed or result.dissolved or result.credited_s:
            logger.info("sweep: %d failed, %d dissolved", len(result.failed), len(result.dissolved))
        if (
            result.failed
            or result.dissolved
            or result.credited_s
            or (was_preserving != self.preserving)
        ):
            self._invalidate()

    def _sweep_job(self) -> liveness.SweepJob:
        late = 0.0
        if self._swept_at is not None:
            late = self.monotonic() - self._swept_at - self._sweep_interval
        return liveness.SweepJob(
            ttls=(self.node_ttl, self.group_ttl),
            policy=self.preservation,
            watch=self.watch,
            late_s=late if late >= config.OUTAGE_MIN_S else 0.0,
            vouch_max_s=config.VOUCH_MAX_TTLS * self.group_ttl,
        )

    def _credit_mirror(self, gap: float) -> None:
        """The mirror's side of :func:`liveness.credit_outage` (same rule)."""
        now = self.clock()
        for state in self._nodes.values():
            if state.last_seen < now:
                state.last_seen = min(state.last_seen + gap, now)

    async def sweep_forever(self, interval: float) -> None:
        """Sweep every ``interval`` seconds until cancelled; a failed sweep is retried."""
        self._sweep_interval = interval
        while True:
            try:
                await self.sweep()
            except StoreUnavailable as exc:
                logger.warning("liveness sweep skipped: %s", exc)  # PostgreSQL out of reach
            except sqlite3.Error:
                logger.exception("liveness sweep failed; will retry")
            await asyncio.sleep(interval)

    async def events(self, *, since: int, limit: int) -> list[Row]:
        return await self._engine.read(reads.select_events, since, limit)

    async def log_digest(self, *, recent: int, per_node: int) -> LogDigest:
        """The dashboard's digest of the events log (:func:`digest.select_log_digest`)."""
        return await self._engine.read(digest.select_log_digest, recent, per_node)

    async def stats(self) -> NetworkStats:
        """Counts of nodes, groups, members and stored models (for ``/metrics``)."""
        stats = await self._engine.read(reads.select_stats, *self._ttls())
        return dataclasses.replace(stats, self_preservation=self.preserving)
