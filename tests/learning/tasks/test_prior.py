"""Prior-shifted scores: the label log-prior, the hook on every path that scores a model
(one module, batched, one by one, the agent's trainer, the simulation) and the bench flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mycelium.cli import app
from mycelium.flower.protocol import ACCURACY_KEY
from mycelium.flower.trainer import LocalTrainer
from mycelium.learning.data import ClientData
from mycelium.learning.sim.federation import Federation, SimConfig
from mycelium.learning.tasks.base import (
    DataRequest,
    ImageTask,
    PriorTask,
    cross_entropy_eval,
    get_weights,
    label_log_prior,
)
from mycelium.learning.tasks.digits import TASK as DIGITS
from mycelium.learning.tasks.mnist import TASK as MNIST
from mycelium.learning.tasks.ops import OneByOne, log_prior_of

MIXED = DataRequest(scenario="mixed", clusters=1, index=3, num_clients=24, seed=0)


def test_label_log_prior_is_laplace_smoothed() -> None:
    prior = label_log_prior(np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(np.exp(prior), [3 / 6, 2 / 6, 1 / 6], rtol=1e-6)
    assert prior.dtype == np.float32 and prior.shape == (3,)
    with pytest.raises(ValueError, match="0..2"):
        label_log_prior(np.array([0, 3]), 3)


def test_the_shift_turns_a_biased_guess_into_the_nodes_frequent_label() -> None:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, 0.1]))  # always says 1, barely
    x, y = np.zeros((5, 2), np.float32), np.zeros(5, np.int64)
    prior = label_log_prior(np.array([0] * 9 + [1]), 2)  # this node mostly sees 0
    assert cross_entropy_eval(model, x, y)[1] == 0.0
    assert cross_entropy_eval(model, x, y, log_prior=prior)[1] == 1.0


@pytest.mark.parametrize("task", [DIGITS, MNIST], ids=["digits", "mnist"])
def test_batched_shift_equals_one_module_shift(task: ImageTask) -> None:
    data = [task.load_data(MIXED), task.load_data(DataRequest("mixed", 1, 7, 24, 0))]
    xs, ys = [d.x_val for d in data], [d.y_val for d in data]
    priors = [task.label_log_prior(d.y_train) for d in data]
    modules = [task.create_model(seed) for seed in (1, 2)]
    loss, acc = task.evaluate_matrix(  # type: ignore[attr-defined]
        [get_weights(m) for m in modules], xs, ys, log_priors=priors
    )
    _, pair_acc = task.evaluate_pairs(  # type: ignore[attr-defined]
        [get_weights(m) for m in modules], xs, ys, log_priors=priors
    )
    for i, module in enumerate(modules):
        for d in range(2):
            one = task.evaluate(module, xs[d], ys[d], log_prior=priors[d])
            assert one[1] == pytest.approx(acc[i, d]) and one[0] == pytest.approx(loss[i, d])
        assert pair_acc[i] == pytest.approx(acc[i, i])
    plain = task.evaluate_matrix([get_weights(m) for m in modules], xs, ys)  # type: ignore[attr-defined]
    assert not np.allclose(plain[0], loss), "the shift must change the loss"


def test_one_by_one_passes_the_prior_to_the_task() -> None:
    data = DIGITS.load_data(MIXED)
    prior = DIGITS.label_log_prior(data.y_train)
    weights = [get_weights(DIGITS.create_model(4))]
    ours = OneByOne(DIGITS).evaluate_matrix(weights, [data.x_val], [data.y_val], log_priors=[prior])
    theirs = DIGITS.evaluate_matrix(weights, [data.x_val], [data.y_val], log_priors=[prior])
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_allclose(ours[1], theirs[1])


class _PlainTask:
    """A task written against the bare protocol: no label prior hook."""

    name, hyper, scenarios = "plain", DIGITS.hyper, ("mixed",)
    create_model, load_data, train = DIGITS.create_model, DIGITS.load_data, DIGITS.train

    def evaluate(self, model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple:
        return cross_entropy_eval(model, x, y)


def test_a_task_without_the_hook_is_scored_plain() -> None:
    task = _PlainTask()
    data = task.load_data(MIXED)
    assert not isinstance(task, PriorTask) and isinstance(DIGITS, PriorTask)
    assert log_prior_of(task, data.y_train) is None
    trainer = LocalTrainer(data, seed=0, task=task)  # type: ignore[arg-type]
    arrays = get_weights(DIGITS.create_model(3))
    module = DIGITS.create_model(3)
    assert trainer.evaluate_arrays(arrays) == cross_entropy_eval(module, data.x_val, data.y_val)
    prior = DIGITS.label_log_prior(data.y_train)
    with pytest.raises(TypeError, match="plain"):
        OneByOne(task).evaluate_matrix(  # type: ignore[arg-type]
            [arrays], [data.x_val], [data.y_val], log_priors=[prior]
        )


def _skewed(data: ClientData) -> ClientData:
    """``data`` with its training labels mostly one class, so the prior is far from flat."""
    keep = np.flatnonzero(data.y_train == data.y_train[0])
    rest = np.flatnonzero(data.y_train != data.y_train[0])[:3]
    rows = np.concatenate([keep, rest])
    return ClientData(
        data.x_train[rows], data.y_train[rows], data.x_val, data.y_val,
        data.x_test, data.y_test, data.cluster,
    )  # fmt: skip


def test_trainer_shifts_group_scores_and_not_the_local_or_test_ones() -> None:
    data = _skewed(DIGITS.load_data(MIXED))
    prior = DIGITS.label_log_prior(data.y_train)
    shifted, plain = LocalTrainer(data, seed=0), LocalTrainer(data, seed=0, prior_shift=False)
    module = DIGITS.create_model(5)
    arrays = get_weights(module)
    want = DIGITS.evaluate(module, data.x_val, data.y_val, log_prior=prior)
    assert shifted.evaluate_arrays(arrays) == pytest.approx(want)
    assert plain.evaluate_arrays(arrays) == pytest.approx(
        DIGITS.evaluate(module, data.x_val, data.y_val)
    )
    assert shifted.evaluate_arrays(arrays) != plain.evaluate_arrays(arrays)
    fit = shifted.fit(arrays, {}, round=1)
    assert fit.metrics[ACCURACY_KEY] == pytest.approx(want[1])
    assert shifted.group_score == pytest.approx(want[1])
    assert shifted.local_score() == plain.local_score()
    assert shifted.test_accuracy(arrays) == plain.test_accuracy(arrays)


def test_simulation_probes_are_shifted_only_when_the_run_is() -> None:
    on = Federation(SimConfig("mixed", 1, 6, 2, 0, 6))
    off = Federation(SimConfig("mixed", 1, 6, 2, 0, 6, prior_shift=False))
    weights = [get_weights(DIGITS.create_model(s)) for s in (1, 2)]
    xs, ys = on.val(0, range(6))
    priors = [DIGITS.label_log_prior(c.y_train) for c in on.phase(0).clients]
    np.testing.assert_array_equal(
        on.score_matrix(weights, 0), DIGITS.evaluate_matrix(weights, xs, ys, log_priors=priors)[1]
    )
    np.testing.assert_array_equal(
        off.score_matrix(weights, 0), DIGITS.evaluate_matrix(weights, xs, ys)[1]
    )
    assert off.log_priors(0, range(6)) is None
    assert not np.array_equal(on.score_matrix(weights, 0), off.score_matrix(weights, 0))


def test_bench_flag_turns_the_shift_off(tmp_path: Path) -> None:
    out = tmp_path / "plain.json"
    args = ["bench", "learning", "--scenario", "mixed", "--clients", "4", "--rounds", "2"]
    args += ["--algorithms", "mycelium", "--no-prior-shift", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["config"]["prior_shift"] is False
