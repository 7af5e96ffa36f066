"""The living-network parts of the simulation: timeline, registry view, metrics, scenarios."""

from __future__ import annotations

import numpy as np
import pytest

from bench import learning_bench
from mycelium.learning import sim
from mycelium.learning.sim import metrics as sim_metrics
from mycelium.learning.sim.registry import RegistryView, claims_order
from mycelium.learning.sim.timeline import (
    ARRIVING_SHARE,
    LEAVING_SHARE,
    Drift,
    make_timeline,
    parse_drift,
)

VIEWS = [i % 4 for i in range(40)]


def test_arrivals_stream_over_the_first_half_and_departures_in_the_second() -> None:
    timeline = make_timeline(clients=40, rounds=30, seed=3, views=VIEWS, arrivals=True)
    assert timeline == make_timeline(clients=40, rounds=30, seed=3, views=VIEWS, arrivals=True)
    late = [a for a in timeline.arrive if a > 0]
    assert len(late) == ARRIVING_SHARE * 40 and all(1 <= a < 15 for a in late)
    leaving = [(i, d) for i, d in enumerate(timeline.leave) if d is not None]
    assert len(leaving) == LEAVING_SHARE * 40
    assert all(15 <= d < 30 and d > timeline.arrive[i] for i, d in leaving)
    assert len(timeline.present(0)) == 20 and timeline.newcomers() == [
        i for i, a in enumerate(timeline.arrive) if a > 0
    ]


def test_drift_moves_a_share_of_present_clients_to_another_view() -> None:
    timeline = make_timeline(clients=40, rounds=30, seed=1, views=VIEWS, drift=Drift(10, 0.25))
    assert timeline.drift_round == 9 and len(timeline.drifted) == 10
    assert all(new != VIEWS[client] for client, new in timeline.drifted)
    with pytest.raises(ValueError, match="needs latent clusters"):
        make_timeline(clients=4, rounds=5, seed=0, views=[None] * 4, drift=Drift(2, 0.5))


@pytest.mark.parametrize(
    ("text", "message"),
    [("15", "ROUND:SHARE"), ("a:0.2", "ROUND:SHARE"), ("1:0.2", "round must be >= 2"),
     ("5:0", "share must be in"), ("5:1.5", "share must be in")],
)  # fmt: skip
def test_parse_drift_rejects_bad_values(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_drift(text)
    assert parse_drift("15:0.25") == Drift(15, 0.25)


def test_registry_view_inflates_the_oldest_groups_claims_not_their_verified() -> None:
    members = {3: {0, 1, 2}, 5: {3}, 8: {4, 5}}
    scores = {g: np.array([0.9, 0.5, 0.8, 0.6, 0.9, 0.3]) for g in members}
    view = RegistryView.publish(members, scores, liars=2)
    assert view.liars == {3, 5}
    assert view.claims[3] == pytest.approx(0.7 + 0.3) and view.claims[5] == pytest.approx(0.9)
    assert view.claims[8] == pytest.approx(0.6)
    assert view.verified == {3: (0.8, 3), 5: (0.6, 1), 8: (pytest.approx(0.6), 2)}
    assert [g.group_id for g in view.listings(members)] == [3, 8, 5]  # verified, then count
    assert claims_order(view, members) == [3, 5, 8]


def test_history_metrics_on_a_hand_built_history() -> None:
    views = [0, 0, 1, 1, 1]
    history = [
        {0: 10, 2: 20},
        {0: 10, 1: 11, 2: 20, 3: 20},  # 1 placed in a group of its own
        {0: 10, 1: 10, 2: 20, 3: 20, 4: 20},  # 1 moved; 4 placed
        {0: 10, 1: 10, 2: 10, 3: 20, 4: 20},  # 2 drifted into view 0 and re-homed
    ]
    assert sim_metrics.moves_after_placement(history) == 2
    assert sim_metrics.newcomers_settled(history, [1, 3, 4]) == pytest.approx(2 / 3)
    drifted_views = [0, 0, 0, 1, 1]
    assert sim_metrics.drift_rehomed(history, [2], drifted_views, drift_round=2) == 1.0
    assert sim_metrics.drift_rehomed(history, [2], drifted_views, drift_round=1) == 0.0
    assert sim_metrics.split_views(history[1], views) == 1
    assert sim_metrics.split_views(history[3], drifted_views) == 0


def test_drifted_nodes_rehome_and_newcomers_settle_in_a_small_run() -> None:
    config = sim.SimConfig("permute", 2, 12, 12, 0, 12, arrivals=True, drift=Drift(9, 0.25))
    results = {r.algorithm: r for r in sim.simulate(config, ["oracle", "mycelium"])}
    mycelium, oracle = results["mycelium"], results["oracle"]
    assert mycelium.drift_rehomed == 1.0 and mycelium.newcomers_settled == 1.0
    assert (mycelium.purity, mycelium.groups, mycelium.split_views) == (1.0, 2, 0)
    assert mycelium.accuracy >= oracle.accuracy - 0.02


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drift": "3"}, "ROUND:SHARE"),
        ({"drift": "9:0.5"}, "after the last round"),
        ({"drift": "2:0.5", "scenarios": ["mixed"]}, "needs latent clusters"),
        ({"liars": -1}, "--liars must be >= 0"),
        ({"max_candidates": 0}, "--max-candidates must be >= 1"),
    ],
)
def test_living_flags_are_checked(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "scenarios": None,
        "clusters": 2,
        "clients": 4,
        "rounds": 3,
        "seed": 0,
        "max_capacity": None,
        "algorithms": None,
        "json_path": None,
        "plot_path": None,
    }
    with pytest.raises(ValueError, match=message):
        learning_bench.run_cli(**(args | kwargs))
