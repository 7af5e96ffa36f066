"""Which groups a node probes: a pure choice that published numbers cannot capture.

Probing a group costs a model download and an evaluation, so a node probes its current group
plus at most ``max_candidates`` others. Taking the first ``max_candidates`` of discovery
sorted by each group's *own claim* lets whoever claims most (a lying group) fill every slot
and hide the group that would serve the node. :func:`choose_candidates` fills the slots with

1. *followed*: groups recently joined by nodes that left the node's current group (nodes
   that trained beside it, so likely with similar data), most recent first;
2. *top*: the best groups by **verified** accuracy (the median of the accuracies the group's
   members report for its model on their own data; a group cannot raise it without its
   members), ranked by :func:`rank_key`, among groups whose figure rests on at least
   ``min_verified_members`` members (one fake member cannot buy a top slot); a group's
   claim only breaks ties;
3. *exploration*: the remaining slots drawn at random without replacement, seeded by the
   caller, with weight ``members + 1`` (a memberless group, all a liar can make alone,
   weighs least, but every group can be drawn).

With no more groups than slots every group is probed. No I/O, no clock, no global random
state: the same inputs give the same list, in the simulation and in the real agent.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Listing:
    """A group as discovery shows it: its claim and what its members' reports verify."""

    group_id: int
    size: int
    verified: float | None = None
    verified_members: int = 0
    claimed: float | None = None


@dataclass(frozen=True)
class ChoiceConfig:
    """Slot shares of :func:`choose_candidates` (exploration takes the rest, at least one)."""

    max_candidates: int = 8
    top_share: float = 0.5
    followed_share: float = 0.25
    min_verified_members: int = 2

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")


def verified_accuracy(reports: Iterable[float | None]) -> tuple[float | None, int]:
    """(median, count) of the members' reported accuracies; (None, 0) without reports."""
    values = [float(r) for r in reports if r is not None]
    if not values:
        return None, 0
    return statistics.median(values), len(values)


def rank_key(listing: Listing) -> tuple[float, ...]:
    """Sort key, best first: verified (none last), members it rests on, claim, size, id."""
    verified = -1.0 if listing.verified is None else listing.verified
    claimed = -1.0 if listing.claimed is None else listing.claimed
    return (-verified, -listing.verified_members, -claimed, -listing.size, listing.group_id)


def discovery_order(listings: Iterable[Listing]) -> list[Listing]:
    """Listings best first by :func:`rank_key` (the order the registry serves)."""
    return sorted(listings, key=rank_key)


def choose_candidates(
    listings: Sequence[Listing],
    *,
    current_group_id: int | None,
    config: ChoiceConfig,
    seed: int,
    followed: Sequence[int] = (),
) -> list[int]:
    """Group ids to probe besides the current group (see the module docstring)."""
    others = {g.group_id: g for g in listings if g.group_id != current_group_id}
    slots = config.max_candidates
    if len(others) <= slots:
        return sorted(others, key=lambda gid: rank_key(others[gid]))
    n_top, n_followed = _slot_counts(config)
    chosen = list(dict.fromkeys(g for g in followed if g in others))[:n_followed]
    ranked = [
        g.group_id
        for g in discovery_order(others.values())
        if g.group_id not in chosen and g.verified_members >= config.min_verified_members
    ]
    chosen += ranked[:n_top]
    rest = [others[g] for g in sorted(others) if g not in chosen]
    return chosen + _weighted_sample(rest, slots - len(chosen), seed)


def _slot_counts(config: ChoiceConfig) -> tuple[int, int]:
    """(top, followed) slots; at least one slot is always left to exploration."""
    slots = config.max_candidates
    n_top = min(max(1, math.floor(slots * config.top_share)), slots - 1)
    n_followed = min(math.floor(slots * config.followed_share), slots - 1 - n_top)
    return max(0, n_top), max(0, n_followed)


def _weighted_sample(pool: Sequence[Listing], count: int, seed: int) -> list[int]:
    """``count`` ids without replacement, weight ``size + 1`` (Efraimidis-Spirakis keys)."""
    rng = random.Random(seed)
    keys = [(rng.random() ** (1.0 / (max(0, g.size) + 1)), g.group_id) for g in pool]
    keys.sort(key=lambda kv: (-kv[0], kv[1]))
    return [gid for _, gid in keys[: max(0, count)]]
