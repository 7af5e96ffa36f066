"""What the dashboard reads from the registry, as injected async functions.

The dashboard never sees the storage itself: :class:`Sources` holds four readers, which the
registry makes over its store when it composes its app
(:func:`mycelium.registry.app.storage_sources`), and :class:`NetworkStats` is the record of
figures the store fills for ``GET /metrics``. The dashboard imports nothing else of ours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]

# What the page shows of a group and of a node: public fields only, and nothing that
# changes with every heartbeat (last_seen), so an unchanged network sends nothing.
GROUP_FIELDS = (
    "group_id", "name", "task", "status", "alive", "num_members", "max_capacity",
    "join_policy", "performance_threshold", "round", "accuracy", "loss", "has_model",
)  # fmt: skip
NODE_FIELDS = (
    "node_id", "name", "task", "group_id", "alive", "accuracy", "personal_accuracy", "round",
)  # fmt: skip


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


@dataclass(frozen=True)
class Sources:
    events_after: Callable[[int, int], Awaitable[list[Row]]]
    """``(after_id, limit)`` -> events with greater ids, oldest first."""
    groups: Callable[[], Awaitable[list[Row]]]
    """Every group, dead ones too."""
    nodes: Callable[[], Awaitable[list[Row]]]
    """Every node."""
    stats: Callable[[], Awaitable[NetworkStats]]


def state_reader(sources: Sources) -> Callable[[], Awaitable[Row]]:
    """The network state the page draws: groups and nodes, public fields only."""

    async def read_state() -> Row:
        groups = await sources.groups()
        nodes = await sources.nodes()
        return {
            "groups": [{k: g.get(k) for k in GROUP_FIELDS} for g in groups],
            "nodes": [{k: n.get(k) for k in NODE_FIELDS} for n in nodes],
        }

    return read_state
