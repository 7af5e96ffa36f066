"""The migration policy: one pure function shared by the real node and the simulation.

No I/O and no clock reads: the caller passes ``now`` (seconds on any monotonic clock) and the
candidates' scores, which are accuracies of each group's *current model on the node's own
validation split* (never the group's published accuracy: that says how well a group serves
its members, not the newcomer), prior-shifted by the node's own label frequencies when the
task allows it (see :class:`mycelium.learning.tasks.base.PriorTask`); ``local_score`` is the
node's local model's plain accuracy on the same split.

Rules of :func:`decide`, in order:

1. warm-up: for ``warmup_s`` after ``started_at`` the node only trains locally ("warming up"):
   a fresh model cannot tell a matching group from a wrong one;
2. eligible candidates: not the current group, not full (``size >= capacity``), and either
   ``join_policy == "open"`` or ``"invite-only"`` (the registry's name) with ``invite_ok``;
3. current group vanished (``current_group_id`` set, ``current_score`` None): re-home at
   once, ignoring the cooldown;
4. no group: join the best acceptable candidate (score >= ``local_score - found_margin``);
   if none is acceptable but discovery listed groups the node did not probe
   (``unprobed``), or open ones within ``search_margin`` of its local score, keep searching
   (stay, train locally) for up to ``search_s`` after the warm-up: young groups improve
   fast, and a node that founds beside them makes a duplicate it must merge out of later,
   while a node alone trains its local model just as its own group would (groups further
   below serve another distribution: the node founds at once).
   When the search is over (or nothing is listed), the best candidate is acceptable within
   ``found_margin`` plus ``noise_z`` standard errors of the local score on ``val_size``
   samples (a local model that looks better only within its validation noise is no reason
   to found); else found a group (its first model is the node's local model);
5. drop: the current group's score fell by ``drop_margin`` since the node's previous
   decision to stay in it (``previous_score``; its data or the group changed): rules 8-10
   at once, ignoring cooldown and flap damping;
6. in a group, after a move the node is held for ``cooldown_s``;
7. while its route-flap damping penalty (``flap_penalty`` per move, halving every
   ``flap_half_life_s``) exceeds ``flap_suppress`` the node is held too, except for
   consolidation (rule 9): those moves only go to groups at least as large, so they
   cannot cycle (each raises the sum of squared group sizes, by 2 or more);
8. migrate when a candidate beats the current score by ``performance_threshold`` *and* by
   the near-equal margin (a gain inside the validation noise is not evidence);
9. consolidate: migrate to a strictly larger group, or one as large and older (lower id),
   scoring within the near-equal margin of the current one (near-equal groups merge instead
   of splitting the data; the tie rule merges two groups of one size, e.g. two singletons
   founded at the same moment by nodes of one cluster, and only the younger one's members
   move, so two such nodes never swap);
10. leave and found when the current group scores ``leave_margin`` plus ``noise_z`` standard
    errors below the local model and no candidate is acceptable (within ``found_margin`` plus
    the same allowance): a node rule 4 let in within the noise is not pushed out by it; else
    stay.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mycelium import config

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
    """Thresholds of :func:`decide` (accuracies in [0, 1], times in seconds). The defaults
    of the times are the simulation's (a round is 30 s); the node agent passes its own
    (``NodeConfig``: cooldown, evaluation interval, warm-up in epochs)."""

    performance_threshold: float = config.PERFORMANCE_THRESHOLD
    found_margin: float = 0.15
    consolidation_epsilon: float = 0.05
    cooldown_s: float = 60.0
    warmup_s: float = 90.0
    flap_penalty: float = 1.0
    flap_half_life_s: float = 600.0
    flap_suppress: float = 2.5
    noise_z: float = 2.0
    leave_margin: float = 0.2
    search_s: float = 60.0
    search_margin: float = 0.3
    drop_margin: float = 0.25


@dataclass(frozen=True)
class NodeState:
    """What the node knows about itself; ``penalty`` is the flap penalty right after its last
    move (see :func:`record_move`); ``previous_score`` the current group's score at the
    node's previous decision to stay in it (None right after a move: a drop is measured
    against a score the node had as a member); ``unprobed`` how many listed groups the node's
    candidate choice left out this time."""

    current_group_id: int | None
    current_score: float | None
    local_score: float
    last_move_at: float | None
    started_at: float
    penalty: float = 0.0
    val_size: int | None = None
    previous_score: float | None = None
    unprobed: int = 0


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
    if state.current_group_id is None:
        return _home(
            state, eligible, config, "no group", searching=_searching(state, eligible, config, now)
        )
    current = state.current_score
    if current is None:
        return _home(state, eligible, config, "current group vanished")
    if _dropped(state, config):
        return _reconsider(state, current, eligible, candidates, config, "drop: ")
    cooling = _cooldown_reason(state, config, now)
    if cooling:
        return Decision("stay", state.current_group_id, cooling, 0.0)
    penalty = damped_penalty(state, config, now)
    if penalty > config.flap_suppress:
        merge = _consolidation(state, current, eligible, candidates, config)
        damped = f"flap damping (penalty {penalty:.2f} > {config.flap_suppress})"
        return merge or Decision("stay", state.current_group_id, damped, 0.0)
    return _reconsider(state, current, eligible, candidates, config)


def damped_penalty(state: NodeState, config: PolicyConfig, now: float) -> float:
    """The flap penalty at ``now``: ``penalty`` halved every ``flap_half_life_s``."""
    if state.last_move_at is None:
        return 0.0
    elapsed = max(0.0, now - state.last_move_at)
    decay: float = 0.5 ** (elapsed / config.flap_half_life_s)  # float ** float is Any to mypy
    return state.penalty * decay


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
    return max(config.consolidation_epsilon, validation_noise(state, config))


def validation_noise(state: NodeState, config: PolicyConfig) -> float:
    """``noise_z`` standard errors of the node's score (its group's, else its local model's)
    on ``val_size`` samples, Laplace-smoothed; 0 when the size is unknown."""
    if not state.val_size:
        return 0.0
    score = state.current_score if state.current_score is not None else state.local_score
    p = (score * state.val_size + 1) / (state.val_size + 2)
    return config.noise_z * math.sqrt(p * (1 - p) / state.val_size)


def _eligible(candidate: Candidate, current_group_id: int | None) -> bool:
    if candidate.group_id == current_group_id or candidate.size >= candidate.capacity:
        return False
    if candidate.join_policy == "open":
        return True
    return candidate.join_policy == "invite-only" and candidate.invite_ok


def _home(
    state: NodeState,
    eligible: list[Candidate],
    config: PolicyConfig,
    why: str,
    *,
    searching: bool = False,
) -> Decision:
    """Join the best acceptable candidate, else keep searching (if ``searching``) or found."""
    best = best_candidate(eligible, near_equal_margin(state, config))
    noise = 0.0 if searching else validation_noise(state, config)  # lenient only to found
    floor = state.local_score - config.found_margin - noise
    if best is not None and best.score >= floor:
        action: Action = "join" if state.current_group_id is None else "migrate"
        gain = best.score - state.local_score
        return Decision(action, best.group_id, f"{why}: best acceptable group", gain)
    if searching:
        below = f"{len(eligible)} open below local, {state.unprobed} unprobed"
        return Decision("stay", None, f"{why}: searching ({below})", 0.0)
    return Decision("found", None, f"{why}: no group within found_margin of local model", 0.0)


def _searching(
    state: NodeState, eligible: list[Candidate], config: PolicyConfig, now: float
) -> bool:
    """Groups are left to probe, or an open one scores within search_margin of the local
    model, and the search after warm-up has not yet lasted search_s."""
    floor = state.local_score - config.search_margin
    listed = state.unprobed > 0 or any(c.score >= floor for c in eligible)
    return listed and now - state.started_at < config.warmup_s + config.search_s


def _dropped(state: NodeState, config: PolicyConfig) -> bool:
    """The current group's score fell by ``drop_margin`` since the previous decision."""
    if state.previous_score is None or state.current_score is None:
        return False
    return state.previous_score - state.current_score >= config.drop_margin


def _cooldown_reason(state: NodeState, config: PolicyConfig, now: float) -> str:
    if state.last_move_at is not None and now - state.last_move_at < config.cooldown_s:
        return f"cooldown ({config.cooldown_s - (now - state.last_move_at):.0f} s left)"
    return ""


def _reconsider(
    state: NodeState,
    current: float,
    eligible: list[Candidate],
    candidates: Sequence[Candidate],
    config: PolicyConfig,
    why: str = "",
) -> Decision:
    """Rules: better group, consolidate, leave and found, else stay (a live group)."""
    margin = near_equal_margin(state, config)
    best = best_candidate(eligible, margin)
    if best is not None and best.score - current >= max(config.performance_threshold, margin):
        return Decision("migrate", best.group_id, why + "better group", best.score - current)
    merge = _consolidation(state, current, eligible, candidates, config)
    if merge is not None:
        return merge
    noise = validation_noise(state, config)  # as lenient to stay as rule 4 was to join
    if current < state.local_score - config.leave_margin - noise and (
        best is None or best.score < state.local_score - config.found_margin - noise
    ):
        return Decision("found", None, why + "group serves worse than local model", 0.0)
    return Decision("stay", state.current_group_id, why + "no better group", 0.0)


def _consolidation(
    state: NodeState,
    current: float,
    eligible: list[Candidate],
    candidates: Sequence[Candidate],
    config: PolicyConfig,
) -> Decision | None:
    """Migrate to the largest group within the near-equal margin that is larger, or as large
    and older (lower id), if any."""
    size = next((c.size for c in candidates if c.group_id == state.current_group_id), None)
    if size is None:
        return None
    margin = near_equal_margin(state, config)
    current_id = state.current_group_id
    assert current_id is not None
    larger = [
        c
        for c in eligible
        if (c.size, -c.group_id) > (size, -current_id) and c.score >= current - margin
    ]
    if not larger:
        return None
    target = max(larger, key=lambda c: (c.size, c.score, -c.group_id))
    return Decision("migrate", target.group_id, "consolidate", target.score - current)
