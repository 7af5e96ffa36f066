"""Group strategies: our aggregate is flwr's strategy for the same replies; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy

from mycelium.learning.sim.federation import fedavg
from mycelium.learning.strategy import (
    PROXIMAL_MU_KEY,
    STRATEGIES,
    GroupAggregator,
    Reply,
    StrategyConfig,
    StrategyError,
    TargetGrid,
    configs_for,
)

RNG = np.random.default_rng(0)
START = [RNG.normal(size=(4, 3)).astype(np.float32), RNG.normal(size=4).astype(np.float32)]
NODES = [7, 3, 11]
EXAMPLES = {7: 10, 3: 30, 11: 5}


def replies_for(model: list[np.ndarray], round_: int) -> dict[int, list[np.ndarray]]:
    rng = np.random.default_rng(round_)
    return {n: [a + rng.normal(size=a.shape).astype(np.float32) for a in model] for n in NODES}


class _Nodes:
    """What flwr's sampling asks of a Grid: the connected node ids."""

    def get_node_ids(self) -> list[int]:
        return list(NODES)


def flwr_direct(name: str, kwargs: dict, rounds: int) -> list[list[np.ndarray]]:
    """flwr's strategy driven by hand, the way its own ServerApp loop does."""
    strategy = getattr(flwr_strategy, name)(
        min_train_nodes=1, min_available_nodes=1, min_evaluate_nodes=1, **kwargs
    )
    model, outputs = START, []
    for server_round in range(1, rounds + 1):
        sent = strategy.configure_train(server_round, ArrayRecord(model), ConfigRecord(), _Nodes())
        by_node = {m.metadata.dst_node_id: m for m in sent}
        trained = replies_for(model, server_round)
        messages = [
            Message(
                RecordDict(
                    {
                        "arrays": ArrayRecord(trained[n]),
                        "metrics": MetricRecord({"num-examples": EXAMPLES[n]}),
                    }
                ),
                reply_to=by_node[n],
            )
            for n in sorted(NODES)
        ]
        arrays, _ = strategy.aggregate_train(server_round, messages)
        model = [a.astype(np.float32) for a in arrays.to_numpy_ndarrays()]
        outputs.append(model)
    return outputs


def ours(config: StrategyConfig, rounds: int) -> tuple[list[list[np.ndarray]], list[dict]]:
    aggregator, model, outputs, configs = GroupAggregator(config), START, [], []
    for server_round in range(1, rounds + 1):
        configs.append(aggregator.configure(model, NODES))
        trained = replies_for(model, server_round)
        model = aggregator.aggregate(Reply(n, trained[n], EXAMPLES[n]) for n in NODES)
        outputs.append(model)
    return outputs, configs


CASES = [
    (StrategyConfig("fedavg"), "FedAvg", {}),
    (StrategyConfig("fedprox", proximal_mu=0.3), "FedProx", {"proximal_mu": 0.3}),
    (StrategyConfig("fedadam"), "FedAdam", {}),
    (
        StrategyConfig("fedadam", server_lr=0.02, beta_1=0.5),
        "FedAdam",
        {"eta": 0.02, "beta_1": 0.5},
    ),
    (StrategyConfig("fedyogi", tau=0.01), "FedYogi", {"tau": 0.01}),
    (StrategyConfig("fedadagrad", server_lr=0.05), "FedAdagrad", {"eta": 0.05}),
]


@pytest.mark.parametrize(("config", "name", "kwargs"), CASES, ids=lambda c: str(c)[:40])
def test_our_aggregate_equals_flwrs_strategy(
    config: StrategyConfig, name: str, kwargs: dict
) -> None:
    mine, configs = ours(config, rounds=3)  # three rounds: FedOpt's moments carry over
    theirs = flwr_direct(name, kwargs, rounds=3)
    for a, b in zip(mine, theirs, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.dtype == np.float32
            np.testing.assert_array_equal(x, y)
    assert [sorted(c) for c in configs] == [sorted(NODES)] * 3
    assert [c[7]["server-round"] for c in configs] == [1, 2, 3]
    if config.name == "fedprox":
        assert all(c[n][PROXIMAL_MU_KEY] == 0.3 for c in configs for n in NODES)


def test_fedavg_is_the_examples_weighted_mean_and_the_legacy_helper() -> None:
    mine, _ = ours(StrategyConfig(), rounds=1)
    trained = replies_for(START, 1)
    total = sum(EXAMPLES.values())
    for i, got in enumerate(mine[0]):
        expected = sum(trained[n][i].astype(np.float64) * EXAMPLES[n] for n in NODES) / total
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        legacy = fedavg([(trained[n], EXAMPLES[n]) for n in NODES])[i]
        np.testing.assert_allclose(got, legacy, rtol=1e-6, atol=1e-6)


def test_fedadam_moves_differently_from_fedavg() -> None:
    adam, _ = ours(StrategyConfig("fedadam"), rounds=2)
    avg, _ = ours(StrategyConfig("fedavg"), rounds=2)
    assert not np.allclose(adam[1][0], avg[1][0])


def test_fedprox_defaults_to_a_nonzero_mu() -> None:
    assert StrategyConfig("fedprox").build().proximal_mu > 0


def test_target_grid_offers_only_the_targets() -> None:
    grid = TargetGrid(_Nodes(), [11, 3, 3])
    assert grid.get_node_ids() == [3, 11]
    with pytest.raises(AttributeError):
        TargetGrid(None, [1]).push_messages  # noqa: B018


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "fedsgd"}, "unknown strategy 'fedsgd'; choose one of fedavg"),
        ({"name": "fedavg", "proximal_mu": 0.1}, "--proximal-mu applies to fedprox, not fedavg"),
        ({"name": "fedprox", "server_lr": 0.1}, "--server-lr applies to fedadam"),
        ({"name": "fedprox", "proximal_mu": -1.0}, "--proximal-mu must be >= 0"),
        ({"name": "fedadam", "server_lr": 0.0}, "--server-lr must be > 0"),
        ({"name": "fedadam", "beta_1": 1.0}, "--beta-1 must be in [0, 1)"),
        ({"name": "fedyogi", "tau": float("nan")}, "--tau must be finite"),
    ],
)
def test_bad_strategy_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(StrategyError, match=message.replace("[", r"\[").replace(")", r"\)")):
        StrategyConfig(**kwargs)


def test_configs_for_gives_each_strategy_its_own_parameters() -> None:
    configs = configs_for(["fedavg", "fedprox", "fedadam"], proximal_mu=0.2, server_lr=0.01)
    assert [c.describe() for c in configs] == [
        "fedavg",
        "fedprox(proximal_mu=0.2)",
        "fedadam(server_lr=0.01)",
    ]
    with pytest.raises(StrategyError, match="--proximal-mu applies to fedprox, none of which"):
        configs_for(["fedavg"], proximal_mu=0.2)
    assert StrategyConfig.from_params("fedprox", {"proximal_mu": 0.2}) == configs[1]
    with pytest.raises(StrategyError, match="unknown strategy parameter 'mu'"):
        StrategyConfig.from_params("fedprox", {"mu": 0.2})
    assert set(STRATEGIES) == {"fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"}
