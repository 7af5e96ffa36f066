"""Figures of a living network, computed from a run's history (group of every present,
placed client after each round), the same way for every algorithm.

A client is *placed* once it has a group (a policy node after its first join or found; every
client of the fixed-membership algorithms from its first round). A *move* is a change of
group between two rounds in both of which the client was placed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

History = Sequence[Mapping[int, int]]


def moves_per_client(history: History) -> Counter[int]:
    """Moves of each client after its first placement."""
    moves: Counter[int] = Counter()
    for before, after in zip(history, history[1:], strict=False):
        for client, group in after.items():
            if client in before and before[client] != group:
                moves[client] += 1
    return moves


def moves_after_placement(history: History) -> int:
    return sum(moves_per_client(history).values())


def newcomers_settled(history: History, newcomers: Sequence[int]) -> float | None:
    """Share of the placed newcomers that never moved after their first placement."""
    placed = {c for groups in history for c in groups}
    counted = [c for c in newcomers if c in placed]
    if not counted:
        return None
    moves = moves_per_client(history)
    return sum(moves[c] == 0 for c in counted) / len(counted)


def view_groups(groups: Mapping[int, int], views: Sequence[int | None]) -> dict[int, int]:
    """View -> the group holding most of its placed clients (ties: lower group id)."""
    counts: dict[int, Counter[int]] = {}
    for client, group in groups.items():
        view = views[client]
        if view is not None:
            counts.setdefault(view, Counter())[group] += 1
    return {v: min(c, key=lambda g: (-c[g], g)) for v, c in counts.items()}


def drift_rehomed(
    history: History, drifted: Sequence[int], views: Sequence[int | None], drift_round: int
) -> float | None:
    """Share of drifted clients in their new view's group after the decisions of the drift
    round and the next (two evaluation intervals); ``views`` are the views after the drift."""
    at = drift_round + 1
    if at >= len(history):
        return None
    groups = history[at]
    home = view_groups(groups, views)
    counted = [c for c in drifted if c in groups]
    if not counted:
        return None
    return sum(_in_home(groups[c], home, views[c]) for c in counted) / len(counted)


def _in_home(group: int, home: Mapping[int, int], view: int | None) -> bool:
    """Whether ``group`` is the home group of ``view`` (a client without a view has none)."""
    return view is not None and group == home.get(view)


def split_views(groups: Mapping[int, int], views: Sequence[int | None]) -> int:
    """How many views have their placed clients in more than one group."""
    spread: dict[int, set[int]] = {}
    for client, group in groups.items():
        view = views[client]
        if view is not None:
            spread.setdefault(view, set()).add(group)
    return sum(len(g) > 1 for g in spread.values())


def effective_size(x: np.ndarray) -> float:
    """Kish's effective number of examples of a split whose rows may repeat: ``n**2 / sum
    m**2`` over its distinct rows of multiplicity ``m`` (``n`` when none repeats)."""
    if len(x) == 0:
        return 0.0
    _, counts = np.unique(x.reshape(len(x), -1), axis=0, return_counts=True)
    return float(len(x) ** 2 / np.square(counts.astype(np.float64)).sum())


def standard_error(accuracy: float, size: float) -> float:
    """The binomial standard error of an ``accuracy`` measured on ``size`` (effective)
    examples (0 without examples)."""
    return math.sqrt(accuracy * (1.0 - accuracy) / size) if size > 0 else 0.0
