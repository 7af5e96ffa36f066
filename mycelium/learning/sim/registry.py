"""What the simulated registry publishes about each group, and its two discovery orders.

Refreshed once per round, as members' heartbeats and the groups' round reports arrive:

* **claim**: the group's own figure, the mean of its members' accuracies (what its
  ServerApp reports), inflated by ``LIE`` (capped at 1) for the ``liars`` oldest live groups;
* **verified**: the median of the accuracies its members report for its model on their own
  data, with how many members it rests on (what the registry derives from heartbeats: a group
  cannot raise it without its members).

A group founded during a round is listed with its founder's figure until the next refresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mycelium.learning.candidates import Listing, discovery_order, verified_accuracy
from mycelium.learning.sim.timeline import LIE


@dataclass
class RegistryView:
    """Per live group: its claim and its verified accuracy (median, members)."""

    claims: dict[int, float] = field(default_factory=dict)
    verified: dict[int, tuple[float | None, int]] = field(default_factory=dict)
    liars: frozenset[int] = frozenset()

    @classmethod
    def publish(
        cls, members: Mapping[int, set[int]], scores: Mapping[int, np.ndarray], liars: int
    ) -> RegistryView:
        """The view after a round: ``scores[g][i]`` is group g's model on client i's data."""
        lying = frozenset(sorted(members)[:liars])
        view = cls(liars=lying)
        for gid, who in members.items():
            view.add(gid, [float(scores[gid][i]) for i in sorted(who)])
        return view

    def add(self, gid: int, reports: list[float]) -> None:
        """List group ``gid`` with its members' ``reports``."""
        claim = float(np.mean(reports)) if reports else 0.0
        self.claims[gid] = min(1.0, claim + LIE) if gid in self.liars else claim
        self.verified[gid] = verified_accuracy(reports)

    def listings(self, members: Mapping[int, set[int]]) -> list[Listing]:
        """Live groups in discovery order (best verified first), sizes as of now."""
        return discovery_order(
            Listing(
                group_id=gid,
                size=len(who),
                verified=self.verified[gid][0],
                verified_members=self.verified[gid][1],
                claimed=self.claims[gid],
            )
            for gid, who in members.items()
        )


def claims_order(view: RegistryView, members: Mapping[int, set[int]]) -> list[int]:
    """Group ids sorted the way discovery sorted them before verified accuracy: the group's
    claim first, then members, then id."""
    return sorted(members, key=lambda g: (-view.claims[g], -len(members[g]), g))
