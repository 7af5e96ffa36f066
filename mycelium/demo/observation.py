"""What the demo sees of the network (only through the registry's API), and when it has
settled."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mycelium.client import RegistryClient

# Stability: no membership change for a window of evaluation cycles, then at least
# STABLE_ROUNDS rounds in every group, whose accuracy is flat: group accuracy comes from
# members' small validation splits (one image is worth ~0.03), so means of FLAT_SPAN rounds
# are compared.
STABLE_CYCLES = 3
STABLE_ROUNDS = 6
FLAT_SPAN = 3
FLAT_ACCURACY = 0.03
MEMBERSHIP_EVENTS = ("joined", "left", "migrated", "evicted")


@dataclass
class Snapshot:
    """What the registry says at one moment (``at``: seconds since the demo started)."""

    at: float
    groups: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    events: list[dict[str, Any]]


def observe(client: RegistryClient, events: list[dict[str, Any]], at: float) -> Snapshot:
    """Read groups (with members and rounds), nodes, and the events after ``events[-1]``
    (appended to ``events``, which the snapshot shares)."""
    groups = client.list_groups(limit=100)
    details = [client.get_group(g["group_id"]) for g in groups]
    nodes = client.list_nodes()
    since = events[-1]["id"] if events else 0
    events.extend(client.events(since=since, limit=500))
    return Snapshot(at=at, groups=details, nodes=nodes, events=events)


def purity(members: list[str], clusters: dict[str, int]) -> float | None:
    """Share of a group's members from its majority cluster (None for an empty group)."""
    known = [clusters[m] for m in members if m in clusters]
    if not known:
        return None
    return max(known.count(c) for c in set(known)) / len(known)


def migrations(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "migrated"]


def everyone_placed(names: Iterable[str], snap: Snapshot) -> bool:
    """Every named node is alive and in a group."""
    placed = {n["name"] for n in snap.nodes if n.get("group_id") is not None and n["alive"]}
    return all(name in placed for name in names)


def is_stable(
    groups: list[dict[str, Any]], events: list[dict[str, Any]], now: float, window: float
) -> bool:
    """The network has settled (all times in unix seconds):

    - no membership change (join, leave, migration, eviction) for ``window`` seconds;
    - every group with members completed ``STABLE_ROUNDS`` rounds since that change;
    - and its accuracy is flat: the mean of its last ``FLAT_SPAN`` rounds is within
      ``FLAT_ACCURACY`` of the mean of the ``FLAT_SPAN`` rounds before them.
    """
    changes = [e["at"] for e in events if e["type"] in MEMBERSHIP_EVENTS]
    if not changes or now - max(changes) < window:
        return False
    populated = [g for g in groups if g.get("members")]
    return bool(populated) and all(_settled(g, max(changes)) for g in populated)


def _settled(group: dict[str, Any], since: float) -> bool:
    accs = [r["accuracy"] for r in group.get("rounds", []) if r["reported_at"] > since]
    if len(accs) < max(STABLE_ROUNDS, 2 * FLAT_SPAN):
        return False
    last, before = accs[-FLAT_SPAN:], accs[-2 * FLAT_SPAN : -FLAT_SPAN]
    return abs(sum(last) / FLAT_SPAN - sum(before) / FLAT_SPAN) <= FLAT_ACCURACY
