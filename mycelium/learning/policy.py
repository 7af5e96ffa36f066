"""The migration policy: one pure function shared by the real node and the simulation.

No I/O and no clock reads: the caller passes ``now`` (seconds on any monotonic clock) and the
candidates' scores, which are accuracies of each group's *current model on the node's own
validation split* (never the group's published accuracy: that says how well a group serves
its members, not the newcomer).

Rules of :func:`decide`, in order:

1. warm-up: for ``warmup_s`` after ``started_at`` the node only trains locally ("warming up"):
   a fresh model cannot tell a matching group from a wrong one;
2. eligible candidates: not the current group, not full (``size >= capacity``), and either
   ``join_policy == "open"`` or ``"invite-only"`` (the registry's name) with ``invite_ok``;
3. current group vanished (``current_group_id`` set, ``current_score`` None): re-home at
   once, ignoring the cooldown;
4. no group: join the best acceptable candidate (score >= ``local_score - found_margin``),
   else found a group (its first model is the node's local model);
5. in a group, after a move the node is held for ``cooldown_s`` and while its route-flap
   damping penalty (``flap_penalty`` per move, halving every ``flap_half_life_s``) exceeds
   ``flap_suppress``;
6. migrate when a candidate beats the current score by ``performance_threshold``;
7. consolidate: migrate to a strictly larger group scoring within the near-equal margin of
   the current one (near-equal groups merge instead of splitting the data);
8. leave and found when the current group scores ``leave_margin`` below the local model and
   no candidate is acceptable; else stay.

The near-equal margin is ``consolidation_epsilon``, widened to ``noise_z`` standard errors of
an accuracy measured on ``val_size`` samples when the caller gives ``val_size`` (differences
smaller than the validation noise are not evidence). "Best" always means: among the
candidates within that margin of the top score, the largest (then the higher score, then
the lower group id).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Action = Literal["stay", "join", "migrate", "found"]


@dataclass(frozen=True)
class Candidate:
    """A group as seen by one node; ``score`` is its model's accuracy on the node's val data."""

    group_id: int
    score: float
    size: int
    capacity: int
    join_policy: str = "open"
    invite_ok: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds of :func:`decide` (accuracies in [0, 1], times in seconds)."""

    performance_threshold: float = 0.05
    found_margin: float = 0.15
    consolidation_epsilon: float = 0.05
    cooldown_s: float = 60.0
    warmup_s: float = 90.0
    flap_penalty: float = 1.0
    flap_half_life_s: float = 600.0
    flap_suppress: float = 2.5
    noise_z: float = 2.0
    leave_margin: float = 0.2


@dataclass(frozen=True)
class NodeState:
    """What the node knows about itself; ``penalty`` is the flap penalty right after its last
    move (see :func:`record_move`)."""

    current_group_id: int | None
    current_score: float | None
    local_score: float
    last_move_at: float | None
    started_at: float
    penalty: float = 0.0
    val_size: int | None = None


@dataclass(frozen=True)
class Decision:
    """What to do; ``group_id`` is the target (None for stay without a group and for found)."""

    action: Action
    group_id: int | None
    reason: str
    expected_gain: float


def decide(
    state: NodeState, candidates: Sequence[Candidate], config: PolicyConfig, now: float
) -> Decision:
    """Stay, join, migrate or found (see the module docstring for the rules)."""
    if now - state.started_at < config.warmup_s:
        return Decision("stay", state.current_group_id, "warming up", 0.0)
    eligible = [c for c in candidates if _eligible(c, state.current_group_id)]
    if state.current_group_id is not None and state.current_score is None:
        return _home(state, eligible, config, "current group vanished")
    if state.current_group_id is None:
        return _home(state, eligible, config, "no group")
    held = _hold_reason(state, config, now)
    if held:
        return Decision("stay", state.current_group_id, held, 0.0)
    return _reconsider(state, state.current_score, eligible, candidates, config)


def damped_penalty(state: NodeState, config: PolicyConfig, now: float) -> float:
    """The flap penalty at ``now``: ``penalty`` halved every ``flap_half_life_s``."""
    if state.last_move_at is None:
        return 0.0
    elapsed = max(0.0, now - state.last_move_at)
    return state.penalty * 0.5 ** (elapsed / config.flap_half_life_s)


def record_move(
    state: NodeState, group_id: int, score: float | None, config: PolicyConfig, now: float
) -> NodeState:
    """The state after joining, migrating to or founding ``group_id`` at ``now``."""
    return dataclasses.replace(
        state,
        current_group_id=group_id,
        current_score=score,
        last_move_at=now,
        penalty=damped_penalty(state, config, now) + config.flap_penalty,
    )


def best_candidate(candidates: Sequence[Candidate], epsilon: float) -> Candidate | None:
    """Among candidates within ``epsilon`` of the top score, the largest (ties: score, id)."""
    if not candidates:
        return None
    top = max(c.score for c in candidates)
    near = [c for c in candidates if c.score >= top - epsilon]
    return max(near, key=lambda c: (c.size, c.score, -c.group_id))


def near_equal_margin(state: NodeState, config: PolicyConfig) -> float:
    """``consolidation_epsilon``, widened to ``noise_z`` standard errors of an accuracy
    measured on ``val_size`` samples: differences inside it are noise, so size decides."""
    if not state.val_size:
        return config.consolidation_epsilon
    score = state.current_score if state.current_score is not None else state.local_score
    p = (score * state.val_size + 1) / (state.val_size + 2)
    return max(
        config.consolidation_epsilon, config.noise_z * math.sqrt(p * (1 - p) / state.val_size)
    )


def _eligible(candidate: Candidate, current_group_id: int | None) -> bool:
    if candidate.group_id == current_group_id or candidate.size >= candidate.capacity:
        return False
    if candidate.join_policy == "open":
        return True
    return candidate.join_policy == "invite-only" and candidate.invite_ok


def _home(state: NodeState, eligible: list[Candidate], config: PolicyConfig, why: str) -> Decision:
    """Join the best acceptable candidate, else found a group."""
    best = best_candidate(eligible, near_equal_margin(state, config))
    if best is not None and best.score >= state.local_score - config.found_margin:
        action: Action = "join" if state.current_group_id is None else "migrate"
        gain = best.score - state.local_score
        return Decision(action, best.group_id, f"{why}: best acceptable group", gain)
    return Decision("found", None, f"{why}: no group within found_margin of local model", 0.0)


def _hold_reason(state: NodeState, config: PolicyConfig, now: float) -> str:
    if state.last_move_at is not None and now - state.last_move_at < config.cooldown_s:
        return f"cooldown ({config.cooldown_s - (now - state.last_move_at):.0f} s left)"
    penalty = damped_penalty(state, config, now)
    if penalty > config.flap_suppress:
        return f"flap damping (penalty {penalty:.2f} > {config.flap_suppress})"
    return ""


def _reconsider(
    state: NodeState,
    current: float,
    eligible: list[Candidate],
    candidates: Sequence[Candidate],
    config: PolicyConfig,
) -> Decision:
    """Rules 6-8 for a node in a live group, outside its cooldown."""
    best = best_candidate(eligible, near_equal_margin(state, config))
    if best is not None and best.score - current >= config.performance_threshold:
        return Decision("migrate", best.group_id, "better group", best.score - current)
    size = next((c.size for c in candidates if c.group_id == state.current_group_id), None)
    larger = [
        c
        for c in eligible
        if size is not None
        and c.size > size
        and c.score >= current - near_equal_margin(state, config)
    ]
    if larger:
        target = max(larger, key=lambda c: (c.size, c.score, -c.group_id))
        return Decision("migrate", target.group_id, "consolidate", target.score - current)
    if current < state.local_score - config.leave_margin and (
        best is None or best.score < state.local_score - config.found_margin
    ):
        return Decision("found", None, "group serves worse than local model", 0.0)
    return Decision("stay", state.current_group_id, "no better group", 0.0)
