"""What the dashboard reads from the registry, as injected async functions.

The dashboard never sees the storage itself: :class:`Sources` holds four readers, and
:func:`storage_sources` makes them from anything with the registry storage's methods
(``events``, ``list_groups``, ``list_nodes``, ``stats``) of the registry's
:class:`~mycelium.registry.store.Store`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mycelium.registry.store.records import NetworkStats

if TYPE_CHECKING:
    from mycelium.registry.store import Store

Row = dict[str, Any]

# What the page shows of a group and of a node: public fields only, and nothing that
# changes with every heartbeat (last_seen), so an unchanged network sends nothing.
GROUP_FIELDS = (
    "group_id", "name", "task", "status", "alive", "num_members", "max_capacity",
    "join_policy", "performance_threshold", "round", "accuracy", "loss", "has_model",
)  # fmt: skip
NODE_FIELDS = ("node_id", "name", "task", "group_id", "alive", "accuracy", "round")
MAX_GROUPS = 10_000


@dataclass(frozen=True)
class Sources:
    events_after: Callable[[int, int], Awaitable[list[Row]]]
    """``(after_id, limit)`` -> events with greater ids, oldest first."""
    groups: Callable[[], Awaitable[list[Row]]]
    """Every group, dead ones too."""
    nodes: Callable[[], Awaitable[list[Row]]]
    """Every node."""
    stats: Callable[[], Awaitable[NetworkStats]]


def storage_sources(get_storage: Callable[[], Store]) -> Sources:
    """Readers over the storage that ``get_storage()`` returns when they are called (the
    storage is opened by the app's lifespan, after the routes are made)."""

    async def events_after(after: int, limit: int) -> list[Row]:
        return await get_storage().events(since=after, limit=limit)

    async def groups() -> list[Row]:
        return await get_storage().list_groups(
            task=None, has_capacity=None, limit=MAX_GROUPS, offset=0, include_dead=True
        )

    async def nodes() -> list[Row]:
        return await get_storage().list_nodes(group_id=None, alive=None)

    async def stats() -> NetworkStats:
        return await get_storage().stats()

    return Sources(events_after=events_after, groups=groups, nodes=nodes, stats=stats)


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
