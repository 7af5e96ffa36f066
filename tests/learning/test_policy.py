"""Every rule of mycelium.learning.policy.decide, on hand-built inputs."""

from __future__ import annotations

import dataclasses

import pytest

from mycelium.learning.policy import (
    Candidate,
    NodeState,
    PolicyConfig,
    best_candidate,
    damped_penalty,
    decide,
    near_equal_margin,
    record_move,
    validation_noise,
)

CFG = PolicyConfig(
    performance_threshold=0.05,
    found_margin=0.2,
    consolidation_epsilon=0.05,
    cooldown_s=60.0,
    warmup_s=60.0,
    flap_penalty=1.0,
    flap_half_life_s=600.0,
    flap_suppress=2.5,
    noise_z=2.0,
    leave_margin=0.2,
    search_s=60.0,
    search_margin=0.3,
    drop_margin=0.25,
)
NOW = 1000.0


def fresh(local: float = 0.8) -> NodeState:
    return NodeState(None, None, local, None, started_at=0.0)


def member(group: int = 1, score: float = 0.8, local: float = 0.8, **kw: object) -> NodeState:
    return NodeState(group, score, local, last_move_at=0.0, started_at=0.0, **kw)


def cand(gid: int, score: float, size: int = 3, capacity: int = 10, **kw: object) -> Candidate:
    return Candidate(gid, score, size, capacity, **kw)


def test_warm_up_stays_even_with_a_perfect_candidate() -> None:
    state = NodeState(None, None, 0.1, None, started_at=NOW - 30)
    decision = decide(state, [cand(1, 1.0)], CFG, NOW)
    assert (decision.action, decision.reason) == ("stay", "warming up")
    assert decide(state, [cand(1, 1.0)], CFG, NOW + 30).action == "join"


def test_no_group_and_no_candidate_founds() -> None:
    assert decide(fresh(), [], CFG, NOW).action == "found"


def test_no_group_joins_a_candidate_within_found_margin_of_local() -> None:
    decision = decide(fresh(0.8), [cand(4, 0.65)], CFG, NOW)
    assert (decision.action, decision.group_id) == ("join", 4)
    assert decision.expected_gain == pytest.approx(-0.15)


def test_no_group_founds_when_every_candidate_is_far_below_local() -> None:
    decision = decide(fresh(0.8), [cand(1, 0.55), cand(2, 0.1)], CFG, NOW)
    assert (decision.action, decision.group_id) == ("found", None)


def test_migrates_only_when_gain_reaches_the_threshold() -> None:
    state = member(score=0.80)
    small_gain = [cand(1, 0.80, size=5), cand(2, 0.84, size=3)]
    assert decide(state, small_gain, CFG, NOW).action == "stay"
    big_gain = [cand(1, 0.80, size=5), cand(2, 0.86, size=3)]
    decision = decide(state, big_gain, CFG, NOW)
    assert (decision.action, decision.group_id) == ("migrate", 2)
    assert decision.expected_gain == pytest.approx(0.06)


def test_cooldown_after_a_move_holds_the_node() -> None:
    moved = dataclasses.replace(member(score=0.5), last_move_at=NOW - 10)
    better = [cand(1, 0.5), cand(2, 0.95)]
    decision = decide(moved, better, CFG, NOW)
    assert decision.action == "stay" and decision.reason.startswith("cooldown")
    assert decide(moved, better, CFG, NOW + 60).action == "migrate"


def test_flap_damping_suppresses_a_node_that_keeps_moving() -> None:
    state = member(score=0.5)
    for k in range(3):  # three quick moves, each outside the plain cooldown
        state = record_move(state, 10 + k, 0.5, CFG, NOW + 61 * k)
    at = NOW + 61 * 2 + 61
    assert damped_penalty(state, CFG, at) > CFG.flap_suppress
    decision = decide(state, [cand(1, 0.95)], CFG, at)
    assert decision.action == "stay" and decision.reason.startswith("flap damping")
    later = at + 600  # one half-life later the penalty has decayed below the limit
    assert damped_penalty(state, CFG, later) < CFG.flap_suppress
    assert decide(state, [cand(1, 0.95)], CFG, later).action == "migrate"


def test_record_move_sets_group_time_and_adds_penalty() -> None:
    moved = record_move(fresh(), 7, 0.9, CFG, NOW)
    assert (moved.current_group_id, moved.current_score, moved.last_move_at) == (7, 0.9, NOW)
    assert moved.penalty == pytest.approx(1.0)
    again = record_move(moved, 8, 0.9, CFG, NOW + 600)
    assert again.penalty == pytest.approx(1.5)


def test_near_equal_candidates_prefer_the_larger_group() -> None:
    decision = decide(fresh(0.8), [cand(1, 0.90, size=2), cand(2, 0.87, size=9)], CFG, NOW)
    assert decision.group_id == 2
    clearly_better = decide(fresh(0.8), [cand(1, 0.95, size=2), cand(2, 0.85, size=9)], CFG, NOW)
    assert clearly_better.group_id == 1


def test_consolidates_into_a_larger_or_as_large_and_older_near_equal_group_only() -> None:
    state = member(group=1, score=0.90)
    larger = [cand(1, 0.90, size=3), cand(2, 0.87, size=8)]
    decision = decide(state, larger, CFG, NOW)
    assert (decision.action, decision.group_id, decision.reason) == ("migrate", 2, "consolidate")
    younger_same_size = [cand(1, 0.90, size=8), cand(2, 0.89, size=8)]
    assert decide(state, younger_same_size, CFG, NOW).action == "stay"
    # Two singletons of one cluster founded at once: only the younger one's member moves.
    in_younger = member(group=4, score=0.90)
    twins = [cand(4, 0.90, size=1), cand(3, 0.86, size=1)]
    decision = decide(in_younger, twins, CFG, NOW)
    assert (decision.action, decision.group_id, decision.reason) == ("migrate", 3, "consolidate")
    in_older = member(group=3, score=0.86)
    assert decide(in_older, [cand(3, 0.86, size=1), cand(4, 0.90, size=1)], CFG, NOW).action == (
        "stay"
    )
    worse = [cand(1, 0.90, size=3), cand(2, 0.70, size=8)]
    assert decide(state, worse, CFG, NOW).action == "stay"


def test_noise_margin_widens_with_a_small_validation_set() -> None:
    small = member(score=0.7, val_size=20)
    large = member(score=0.7, val_size=10_000)
    p = (0.7 * 20 + 1) / 22  # smoothed accuracy
    assert near_equal_margin(small, CFG) == pytest.approx(2 * (p * (1 - p) / 20) ** 0.5)
    assert near_equal_margin(large, CFG) == CFG.consolidation_epsilon
    groups = [cand(1, 0.7, size=3), cand(2, 0.6, size=8)]
    assert decide(small, groups, CFG, NOW).action == "migrate"
    assert decide(large, groups, CFG, NOW).action == "stay"


def test_full_groups_are_skipped_but_the_current_full_group_is_kept() -> None:
    full = [cand(1, 0.95, size=10, capacity=10), cand(2, 0.70, size=2, capacity=10)]
    decision = decide(fresh(0.8), full, CFG, NOW)
    assert (decision.action, decision.group_id) == ("join", 2)
    in_full = member(group=1, score=0.95)
    assert decide(in_full, full, CFG, NOW).action == "stay"


def test_invite_only_needs_an_invitation() -> None:
    closed = [cand(1, 0.95, join_policy="invite-only")]
    assert decide(fresh(0.8), closed, CFG, NOW).action == "found"
    invited = [cand(1, 0.95, join_policy="invite-only", invite_ok=True)]
    assert decide(fresh(0.8), invited, CFG, NOW).action == "join"
    unknown = [cand(1, 0.95, join_policy="closed", invite_ok=True)]
    assert decide(fresh(0.8), unknown, CFG, NOW).action == "found"


def test_vanished_group_rehomes_at_once_ignoring_cooldown() -> None:
    gone = NodeState(5, None, 0.8, last_move_at=NOW - 1, started_at=0.0, penalty=9.0)
    decision = decide(gone, [cand(2, 0.75)], CFG, NOW)
    assert (decision.action, decision.group_id) == ("migrate", 2)
    assert decide(gone, [cand(2, 0.1)], CFG, NOW).action == "found"


def test_leaves_and_founds_when_the_group_serves_far_worse_than_local() -> None:
    stuck = member(group=1, score=0.5, local=0.9)
    decision = decide(stuck, [cand(1, 0.5), cand(2, 0.3)], CFG, NOW)
    assert decision.action == "found"
    assert decide(member(group=1, score=0.75, local=0.9), [cand(1, 0.75)], CFG, NOW).action == (
        "stay"
    )


def test_best_candidate_breaks_ties_by_size_score_then_lower_id() -> None:
    assert best_candidate([], 0.05) is None
    picked = best_candidate([cand(3, 0.9, size=4), cand(2, 0.9, size=4)], 0.0)
    assert picked is not None and picked.group_id == 2


def test_decide_does_not_mutate_its_inputs() -> None:
    state, candidates = member(score=0.5), [cand(2, 0.95)]
    decide(state, candidates, CFG, NOW)
    assert state == member(score=0.5) and candidates == [cand(2, 0.95)]


def test_a_gain_inside_the_validation_noise_is_no_reason_to_migrate() -> None:
    groups = [cand(1, 0.70, size=5), cand(2, 0.78, size=5)]  # +0.08 > threshold 0.05
    noisy = member(score=0.70, val_size=20)  # margin 2 x SE of 20 samples, about 0.2
    assert near_equal_margin(noisy, CFG) > 0.08
    assert decide(noisy, groups, CFG, NOW).action == "stay"
    precise = member(score=0.70, val_size=10_000)
    decision = decide(precise, groups, CFG, NOW)
    assert (decision.action, decision.group_id, decision.reason) == ("migrate", 2, "better group")


def test_no_group_keeps_searching_while_listed_groups_are_unprobed() -> None:
    far = [cand(1, 0.3), cand(2, 0.2)]  # nothing within found_margin of local 0.8
    searching = dataclasses.replace(fresh(0.8), unprobed=5)
    in_window = CFG.warmup_s + 30
    decision = decide(searching, [], CFG, in_window)
    assert (decision.action, decision.group_id) == ("stay", None)
    assert decision.reason.startswith("no group: searching")
    assert decide(searching, far, CFG, CFG.warmup_s + CFG.search_s).action == "found"
    found_one = decide(searching, [*far, cand(3, 0.75)], CFG, in_window)
    assert (found_one.action, found_one.group_id) == ("join", 3)


def test_no_group_waits_beside_listed_groups_below_it_before_founding() -> None:
    """Young groups improve fast: a node whose local model beats every listed group keeps
    training alone for search_s instead of founding a duplicate it would merge out of."""
    near = [cand(1, 0.55), cand(2, 0.2)]  # 0.55: 0.25 below local, within search_margin
    in_window = CFG.warmup_s + 30
    decision = decide(fresh(0.8), near, CFG, in_window)
    assert (decision.action, decision.group_id) == ("stay", None)
    assert decision.reason == "no group: searching (2 open below local, 0 unprobed)"
    assert decide(fresh(0.8), near, CFG, CFG.warmup_s + CFG.search_s).action == "found"
    assert decide(fresh(0.8), [], CFG, in_window).action == "found"  # nothing listed
    far = [cand(1, 0.45), cand(2, 0.2)]  # another distribution's groups: found at once
    assert decide(fresh(0.8), far, CFG, in_window).action == "found"
    full = [cand(1, 0.55, size=10, capacity=10)]
    assert decide(fresh(0.8), full, CFG, in_window).action == "found"  # nothing open


def test_found_margin_is_widened_by_the_local_scores_validation_noise() -> None:
    """Once the search is over, 0.55 is 0.25 below a local 0.8: too far on 10,000
    validation samples, but within found_margin 0.2 plus two standard errors (about 0.17)
    of a score measured on 24."""
    group = [cand(1, 0.55)]
    precise = dataclasses.replace(fresh(0.8), val_size=10_000)
    assert decide(precise, group, CFG, NOW).action == "found"
    noisy = dataclasses.replace(fresh(0.8), val_size=24)
    assert validation_noise(noisy, CFG) == pytest.approx(0.17, abs=0.005)
    decision = decide(noisy, group, CFG, NOW)
    assert (decision.action, decision.group_id) == ("join", 1)
    in_window = CFG.warmup_s + 30  # while searching the margin is strict: wait, re-probe
    assert decide(noisy, group, CFG, in_window).reason.startswith("no group: searching")
    assert validation_noise(fresh(0.8), CFG) == 0.0  # size unknown: found_margin alone
    assert near_equal_margin(fresh(0.8), CFG) == CFG.consolidation_epsilon


def test_leave_margin_is_widened_by_the_same_validation_noise() -> None:
    """A group 0.3 below a local 0.9 is left on 10,000 validation samples; on 24 samples the
    gap is inside leave_margin 0.2 plus two standard errors of the group's 0.6 (about 0.20),
    so a node let in within the noise is not pushed out by it."""
    precise = member(group=1, score=0.6, local=0.9, val_size=10_000)
    assert decide(precise, [cand(1, 0.6)], CFG, NOW).action == "found"
    noisy = member(group=1, score=0.6, local=0.9, val_size=24)
    assert validation_noise(noisy, CFG) == pytest.approx(0.20, abs=0.005)
    decision = decide(noisy, [cand(1, 0.6)], CFG, NOW)
    assert (decision.action, decision.reason) == ("stay", "no better group")
    far = member(group=1, score=0.4, local=0.9, val_size=24)  # beyond the allowance too
    assert decide(far, [cand(1, 0.4)], CFG, NOW).action == "found"


def test_a_sudden_drop_of_the_current_group_ignores_cooldown_and_damping() -> None:
    drifted = NodeState(1, 0.40, 0.4, last_move_at=NOW - 10, started_at=0.0, penalty=9.0)
    groups = [cand(1, 0.40), cand(2, 0.90)]
    dropped = dataclasses.replace(drifted, previous_score=0.95)
    decision = decide(dropped, groups, CFG, NOW)
    assert (decision.action, decision.group_id) == ("migrate", 2)
    assert decision.reason == "drop: better group"
    small_drop = dataclasses.replace(drifted, previous_score=0.60)  # 0.20 < drop_margin
    assert decide(small_drop, groups, CFG, NOW).reason.startswith("cooldown")
    assert decide(drifted, groups, CFG, NOW).reason.startswith("cooldown")  # no previous


def test_flap_damping_holds_performance_moves_but_not_consolidation() -> None:
    state = member(group=1, score=0.90)
    for k in range(3):
        state = record_move(state, 1, 0.90, CFG, NOW + 61 * k)
    at = NOW + 61 * 3
    assert damped_penalty(state, CFG, at) > CFG.flap_suppress
    merge = decide(state, [cand(1, 0.90, size=2), cand(2, 0.88, size=8)], CFG, at)
    assert (merge.action, merge.group_id, merge.reason) == ("migrate", 2, "consolidate")
    better = decide(state, [cand(1, 0.50, size=8), cand(2, 0.95, size=2)], CFG, at)
    assert better.action == "stay" and better.reason.startswith("flap damping")
    cooling = decide(state, [cand(1, 0.90, size=2), cand(2, 0.88, size=8)], CFG, NOW + 61 * 2 + 30)
    assert cooling.reason.startswith("cooldown")
