"""mycelium.learning.candidates: the candidate choice on hand-built listings, with liars."""

from __future__ import annotations

from collections import Counter

import pytest

from mycelium.learning.candidates import (
    ChoiceConfig,
    Listing,
    choose_candidates,
    discovery_order,
    verified_accuracy,
)

THREE = ChoiceConfig(max_candidates=3)
EIGHT = ChoiceConfig(max_candidates=8)


def honest(gid: int, verified: float, members: int = 10) -> Listing:
    return Listing(gid, members, verified, members, claimed=verified)


def liar(gid: int, fake_members: int = 0) -> Listing:
    """Claims 1.0; at most ``fake_members`` members, each reporting 1.0."""
    verified = 1.0 if fake_members else None
    return Listing(gid, fake_members, verified, fake_members, claimed=1.0)


def claims_first(listings: list[Listing], k: int) -> list[int]:
    """The old choice: the first k of discovery sorted by each group's own claim."""
    ordered = sorted(listings, key=lambda g: (-(g.claimed or 0.0), -g.size, g.group_id))
    return [g.group_id for g in ordered[:k]]


def test_verified_accuracy_is_the_median_of_reports_with_its_count() -> None:
    assert verified_accuracy([0.9, 0.2, 0.8, None]) == (0.8, 3)
    assert verified_accuracy([0.5, 0.7]) == (pytest.approx(0.6), 2)
    assert verified_accuracy([None]) == (None, 0)


def test_discovery_order_sorts_by_verified_not_by_claim() -> None:
    groups = [liar(1), honest(2, 0.80), Listing(3, 4, 0.95, 4, claimed=0.10), honest(4, 0.95, 9)]
    assert [g.group_id for g in discovery_order(groups)] == [4, 3, 2, 1]


def test_every_group_is_probed_when_they_fit_and_the_current_one_is_left_out() -> None:
    groups = [honest(g, 0.5 + g / 100) for g in range(6)]
    chosen = choose_candidates(groups, current_group_id=2, config=EIGHT, seed=0)
    assert chosen == [5, 4, 3, 1, 0]


def test_more_lying_groups_than_candidates_cannot_hide_the_right_group() -> None:
    # Ten liars claim 1.0 (three back it with one fake member each); the node's own cluster's
    # group (gid 21) is honest but not the best verified. The old choice probes liars only.
    liars = [liar(g, fake_members=1 if g < 3 else 0) for g in range(10)]
    groups = [*liars, honest(20, 0.95), honest(21, 0.90), honest(22, 0.93)]
    assert set(claims_first(groups, 3)) <= set(range(10))
    hits = Counter()
    for seed in range(40):
        chosen = choose_candidates(groups, current_group_id=None, config=THREE, seed=seed)
        assert len(chosen) == 3 == len(set(chosen))
        assert chosen[0] == 20  # the top slot goes to the best verified group, never a liar
        hits.update(chosen)
    # Exploration (two slots, weight members + 1) finds it in over half of single decisions,
    # so within a few evaluation intervals; no liar is drawn a third as often.
    assert hits[21] >= 20
    assert max(hits[g] for g in range(10)) * 3 < hits[21]


def test_followed_groups_come_first_then_top_then_exploration() -> None:
    groups = [honest(g, 0.9 - g / 100) for g in range(12)]
    chosen = choose_candidates(
        groups, current_group_id=0, config=EIGHT, seed=3, followed=[9, 99, 0, 9, 8, 7]
    )
    # followed: 9 and 8 (99 is not listed, 0 is the current group; two slots of eight)
    assert chosen[:2] == [9, 8]
    assert chosen[2:6] == [1, 2, 3, 4]  # top four by verified, the current group left out
    assert len(chosen) == 8 and len(set(chosen)) == 8 and 0 not in chosen


def test_one_member_is_not_enough_for_a_top_slot() -> None:
    groups = [Listing(1, 1, 1.0, 1, 1.0), *(honest(g, 0.8) for g in range(2, 10))]
    top = choose_candidates(groups, current_group_id=None, config=THREE, seed=0)[0]
    assert top == 2


def test_same_seed_same_choice_and_seeds_explore_different_groups() -> None:
    groups = [honest(g, 0.9, members=5) for g in range(30)]
    first = choose_candidates(groups, current_group_id=None, config=EIGHT, seed=7)
    again = choose_candidates(groups, current_group_id=None, config=EIGHT, seed=7)
    assert first == again
    explored = set()
    for seed in range(20):
        explored |= set(choose_candidates(groups, current_group_id=None, config=EIGHT, seed=seed))
    assert len(explored) >= 20  # every seed keeps the same top four, exploration varies


def test_exploration_weights_members() -> None:
    groups = [honest(0, 0.9), honest(1, 0.9), Listing(2, 0, None, 0), Listing(3, 40, 0.5, 40)]
    groups += [Listing(g, 0, None, 0) for g in range(4, 12)]
    draws = Counter()
    for seed in range(200):
        draws.update(choose_candidates(groups, current_group_id=None, config=THREE, seed=seed))
    assert draws[3] > 150  # 41 times the weight of each memberless group
    assert max(draws[g] for g in range(4, 12)) < draws[3] / 4


def test_max_candidates_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_candidates must be >= 1"):
        ChoiceConfig(max_candidates=0)
