"""Pure parts of the demo: the node plan, purity and the stability rule."""

from __future__ import annotations

from demo import DemoConfig, is_stable, plan_nodes, purity


def test_plan_round_robins_clusters_and_misplaces_the_last_node() -> None:
    specs = plan_nodes(DemoConfig(nodes=6, clusters=3))
    assert [s.cluster for s in specs] == [0, 1, 2, 0, 1, 2]
    assert [s.misplaced for s in specs] == [False] * 5 + [True]
    assert [s.index for s in specs] == list(range(6))


def test_no_misplacement_without_a_second_node_of_a_cluster() -> None:
    assert not any(s.misplaced for s in plan_nodes(DemoConfig(nodes=3, clusters=3)))
    assert not any(s.misplaced for s in plan_nodes(DemoConfig(nodes=4, clusters=1)))


def test_purity() -> None:
    clusters = {"a": 0, "b": 0, "c": 1}
    assert purity(["a", "b"], clusters) == 1.0
    assert purity(["a", "b", "c"], clusters) == 2 / 3
    assert purity([], clusters) is None


def test_stable_needs_a_full_quiet_window() -> None:
    flat = [(t, 1, {1: 0.90, 2: 0.80}) for t in range(0, 31, 5)]
    assert is_stable(flat, window=30)
    assert not is_stable(flat[:3], window=30)  # too short a history


def test_a_recent_migration_or_moving_accuracy_is_not_stable() -> None:
    moved = [(t, 1 if t < 20 else 2, {1: 0.9}) for t in range(0, 31, 5)]
    assert not is_stable(moved, window=30)
    rising = [(t, 0, {1: 0.5 + t / 100}) for t in range(0, 31, 5)]
    assert not is_stable(rising, window=30)
