"""The life of a simulated network: who is present when, whose data drifts, which groups lie.

Everything here is a pure function of the flags and the seed, so every algorithm of one run
meets the same arrivals, departures and drift:

* ``--arrivals``: ``ARRIVING_SHARE`` of the clients (a seeded choice) are absent at first
  and arrive over the first half of the run as a Poisson stream (arrival times uniform
  order statistics on ``[1, rounds / 2)``: a Poisson process conditioned on its count);
  ``LEAVING_SHARE`` of all clients leave for good at a uniform round of the second half;
* ``--drift ROUND:SHARE``: from 1-based round ``ROUND`` on, ``SHARE`` of the clients present
  then (a seeded choice) see their images through another cluster's transform (a cluster
  with a different view, chosen uniformly), for training, validation and test;
* ``--liars N``: the ``N`` oldest live groups publish their accuracy inflated by ``LIE``
  (capped at 1) in the registry view; see ``mycelium.learning.sim.registry``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ARRIVING_SHARE = 0.5
LEAVING_SHARE = 0.2
LIE = 0.3


@dataclass(frozen=True)
class Drift:
    """From 1-based round ``round`` on, ``share`` of the present clients change cluster."""

    round: int
    share: float


def parse_drift(text: str) -> Drift:
    """``ROUND:SHARE`` (e.g. ``15:0.25``) or a one-line ValueError."""
    try:
        round_text, share_text = text.split(":")
        drift = Drift(int(round_text), float(share_text))
    except ValueError:
        raise ValueError(f"--drift expects ROUND:SHARE (e.g. 15:0.25), got {text!r}") from None
    if drift.round < 2:
        raise ValueError(f"--drift round must be >= 2, got {drift.round}")
    if not 0.0 < drift.share <= 1.0:
        raise ValueError(f"--drift share must be in (0, 1], got {drift.share}")
    return drift


@dataclass(frozen=True)
class Timeline:
    """Presence per client (0-based rounds), the drift, and how many groups lie."""

    arrive: tuple[int, ...]
    leave: tuple[int | None, ...]
    drift_round: int | None = None
    drifted: tuple[tuple[int, int], ...] = ()
    liars: int = 0

    def present(self, round_: int) -> list[int]:
        """Clients taking part in 0-based round ``round_``."""
        return [
            i
            for i, (a, d) in enumerate(zip(self.arrive, self.leave, strict=True))
            if a <= round_ and (d is None or round_ < d)
        ]

    def newcomers(self) -> list[int]:
        """Clients that arrive after the first round."""
        return [i for i, a in enumerate(self.arrive) if a > 0]

    def new_cluster(self) -> dict[int, int]:
        """Drifted client -> the cluster whose view it has from ``drift_round`` on."""
        return dict(self.drifted)


def static(clients: int) -> Timeline:
    """Everybody present all the time, nothing drifts, nobody lies."""
    return Timeline(arrive=(0,) * clients, leave=(None,) * clients)


def make_timeline(
    *,
    clients: int,
    rounds: int,
    seed: int,
    views: Sequence[int | None],
    arrivals: bool = False,
    drift: Drift | None = None,
    liars: int = 0,
) -> Timeline:
    """The timeline of one run; ``views[i]`` is client i's distinct data view (its cluster,
    with rotate's identical clusters merged; None without clusters)."""
    arrive: list[int] = [0] * clients
    leave: list[int | None] = [None] * clients
    if arrivals:
        arrive, leave = _churn(clients, rounds, seed)
    timeline = Timeline(tuple(arrive), tuple(leave), liars=liars)
    if drift is None:
        return timeline
    if any(v is None for v in views):
        raise ValueError("--drift needs latent clusters; the mixed scenario has none")
    start = drift.round - 1
    drifted = _drifted(timeline.present(start), drift.share, views, seed)
    return Timeline(tuple(arrive), tuple(leave), start, drifted, liars)


def _churn(clients: int, rounds: int, seed: int) -> tuple[list[int], list[int | None]]:
    rng = np.random.default_rng([seed, 15, 1])
    arrive: list[int] = [0] * clients
    leave: list[int | None] = [None] * clients
    half = max(2, rounds // 2)
    late = rng.permutation(clients)[: round(ARRIVING_SHARE * clients)]
    times = np.sort(rng.uniform(1, half, size=len(late)))
    for client, at in zip(sorted(int(c) for c in late), times, strict=True):
        arrive[client] = int(at)
    leaving = rng.permutation(clients)[: round(LEAVING_SHARE * clients)]
    for client in sorted(int(c) for c in leaving):
        low = max(half, arrive[client] + 1)
        if low < rounds:
            leave[client] = int(rng.integers(low, rounds))
    return arrive, leave


def _drifted(
    present: Sequence[int], share: float, views: Sequence[int | None], seed: int
) -> tuple[tuple[int, int], ...]:
    """A seeded ``share`` of ``present`` with a new cluster of a different view each."""
    rng = np.random.default_rng([seed, 15, 2])
    chosen = sorted(int(c) for c in rng.permutation(present)[: round(share * len(present))])
    clusters = sorted({v for v in views if v is not None})
    moves = []
    for client in chosen:
        others = [c for c in clusters if c != views[client]]
        if others:
            moves.append((client, others[int(rng.integers(len(others)))]))
    return tuple(moves)
