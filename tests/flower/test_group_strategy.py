"""The ServerApp's strategies are flwr's own classes over the live members, with replies
checked against the group's model fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy

from mycelium.fingerprint import model_spec
from mycelium.flower.group_registry import start_point
from mycelium.flower.strategy import LiveFedAdam, LiveFedProx, group_strategy
from mycelium.learning.strategy import StrategyConfig, process_identity

START = [np.ones((3, 2), np.float32), np.zeros(2, np.float32)]
SPEC = model_spec(["w", "b"], START)


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [5, 6]


def _replies(sent: list[Message], arrays: dict[int, list[np.ndarray]]) -> list[Message]:
    by_node = {m.metadata.dst_node_id: m for m in sent}
    return [
        Message(
            RecordDict(
                {
                    "arrays": ArrayRecord(arrays[n]),
                    "metrics": MetricRecord(
                        {"num-examples": 10 * n, "val_accuracy": 0.5, "val_loss": 1.0}
                    ),
                }
            ),
            reply_to=by_node[n],
        )
        for n in sorted(arrays)
    ]


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"])
def test_the_group_aggregate_is_flwrs_for_the_same_replies(name: str) -> None:
    config = StrategyConfig(name)
    ours = group_strategy(config, unclaimed_grace=0.0, spec=SPEC)
    theirs = getattr(flwr_strategy, config.flwr_class_name)(
        min_train_nodes=1, min_available_nodes=1, **config.flwr_kwargs()
    )
    trained = {5: [a + 1 for a in START], 6: [a - 3 for a in START]}
    with process_identity():
        results = []
        for strategy in (ours, theirs):
            sent = list(strategy.configure_train(1, ArrayRecord(START), ConfigRecord(), _Grid()))
            arrays, _ = strategy.aggregate_train(1, _replies(sent, trained))
            results.append(arrays.to_numpy_ndarrays())
    for mine, flwr_own in zip(*results, strict=True):
        assert mine.dtype == np.float32  # cast to the fingerprint's dtype
        np.testing.assert_array_equal(mine, flwr_own.astype(np.float32))


def test_replies_that_do_not_fit_the_fingerprint_are_dropped() -> None:
    strategy = LiveFedAdam(unclaimed_grace=0.0, spec=SPEC)
    with process_identity():
        sent = list(strategy.configure_train(1, ArrayRecord(START), ConfigRecord(), _Grid()))
        bad = [START[0].astype(np.float64), START[1]]
        arrays, metrics = strategy.aggregate_train(1, _replies(sent, {5: START, 6: bad}))
    assert arrays is not None and metrics["num-nodes"] == 1


def test_fedprox_sends_proximal_mu_and_messages_carry_the_ttl() -> None:
    strategy = LiveFedProx(unclaimed_grace=0.0, spec=SPEC, proximal_mu=0.25)
    strategy.message_ttl = 42.0
    with process_identity():
        sent = strategy.configure_train(3, ArrayRecord(START), ConfigRecord(), _Grid())
    assert sorted(m.metadata.dst_node_id for m in sent) == [5, 6]
    assert all(m.metadata.ttl == 42.0 for m in sent)
    assert all(m.content["config"]["proximal-mu"] == 0.25 for m in sent)
    assert all(m.content["config"]["server-round"] == 3 for m in sent)


class _Registry:
    def __init__(self, arrays: list[np.ndarray] | None) -> None:
        self.arrays = arrays

    def model(self) -> list[np.ndarray] | None:
        return self.arrays


def test_start_point_prefers_the_registry_then_the_given_arrays() -> None:
    other = [np.zeros(4, np.float32)]
    assert start_point(_Registry(START), 7, SPEC, None)[1] == 8
    assert start_point(_Registry(other), 7, SPEC, START) == (START, 1)
    assert start_point(_Registry(None), None, SPEC, other) is None
    assert start_point(_Registry(None), None, None, None) is None
