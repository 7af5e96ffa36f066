"""What the dashboard reads from the registry, as injected async functions.

The dashboard never sees the storage itself: :class:`Sources` holds five readers, which the
registry makes over its store when it composes its app
(:func:`mycelium.registry.app.storage_sources`); :class:`NetworkStats` is the record of
figures the store fills for ``GET /metrics`` and :class:`LogDigest` the one it fills for the
page's snapshot. Of ours, the dashboard imports only the API's models (``mycelium.api``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mycelium.dashboard.models import GROUP_FIELDS, NODE_FIELDS, Snapshot

Row = dict[str, Any]


@dataclass(frozen=True)
class GroupFigures:
    group_id: int
    live_members: int
    max_capacity: int


@dataclass(frozen=True)
class NetworkStats:
    """Figures about the whole network, for ``GET /metrics``."""

    nodes_registered: int
    nodes_alive: int
    groups_by_status: dict[str, int]
    groups_alive: int
    groups: tuple[GroupFigures, ...]
    """Groups not dissolved, with their live members."""
    models_stored: int
    model_bytes: int
    self_preservation: bool = False
    """The registry holds expiry: many nodes went silent at once (docs/architecture.md)."""


# The events that make a node's history in the page's node panel.
HISTORY_TYPES = ("node_registered", "node_deleted", "joined", "left", "migrated", "evicted")
PRESERVATION_TYPES = ("self_preservation_started", "self_preservation_ended")


@dataclass(frozen=True)
class LogDigest:
    """What the page derives from the events log, read up to one event id (``last_id``):
    every part stops there, so the events after it are exactly those the stream sends after
    ``last_id``. Bounded by the caller's ``recent`` and ``per_node``, not by the log's age."""

    last_id: int
    """The log's last event id when it was read (0: the log is empty)."""
    recent: list[Row]
    """The last ``recent`` events, oldest first."""
    history: list[Row]
    """Of each registered node, its last ``per_node`` events of :data:`HISTORY_TYPES`,
    oldest first."""
    migrations: int
    """``migrated`` events in the log."""
    preservation: Row | None
    """The last event of :data:`PRESERVATION_TYPES` (whether the registry holds expiry)."""
    node_names: dict[int, str]
    """Name at registration of each node that ``recent`` names (deleted ones too)."""


@dataclass(frozen=True)
class Sources:
    events_after: Callable[[int, int], Awaitable[list[Row]]]
    """``(after_id, limit)`` -> events with greater ids, oldest first."""
    groups: Callable[[], Awaitable[list[Row]]]
    """Every group, dead ones too."""
    nodes: Callable[[], Awaitable[list[Row]]]
    """Every node."""
    stats: Callable[[], Awaitable[NetworkStats]]
    log_digest: Callable[[int, int], Awaitable[LogDigest]]
    """``(recent, per_node)`` -> the :class:`LogDigest` of the log as it is now."""


def state_reader(sources: Sources) -> Callable[[], Awaitable[Row]]:
    """The network state the page draws: groups and nodes, public fields only."""

    # Public fields only (models.GroupView, NodeView), and nothing that changes with every
    # heartbeat (last_seen), so an unchanged network sends nothing.
    async def read_state() -> Row:
        groups = await sources.groups()
        nodes = await sources.nodes()
        return {
            "groups": [{k: g.get(k) for k in GROUP_FIELDS} for g in groups],
            "nodes": [{k: n.get(k) for k in NODE_FIELDS} for n in nodes],
        }

    return read_state


def snapshot_reader(
    sources: Sources, read_state: Callable[[], Awaitable[Row]], *, per_node: int
) -> Callable[[int], Awaitable[Snapshot]]:
    """The page's snapshot with at most ``recent`` recent events (``GET /dashboard/snapshot``)."""

    async def read_snapshot(recent: int) -> Snapshot:
        # The log first, then the state: the cursor (digest.last_id) is taken before
        # anything else is read, and every event-derived part stops at it, so an event
        # logged while the snapshot is built is after the cursor and reaches the page once,
        # through the stream. The state read after it may already show that event's effect
        # (a node in its new group); the page applies the event again, which changes nothing.
        digest = await sources.log_digest(recent, per_node)
        state = await read_state()
        return Snapshot.model_validate(
            {
                "last_event_id": digest.last_id,
                "groups": state["groups"],
                "nodes": state["nodes"],
                "recent_events": digest.recent,
                "history": digest.history,
                "migrations": digest.migrations,
                "preservation": digest.preservation,
                "node_names": digest.node_names,
            }
        )

    return read_snapshot
