"""The built-in tasks: digits unchanged, MNIST real and offline, batched == one at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mycelium.fingerprint import FingerprintError
from mycelium.learning import model as mlp
from mycelium.learning.data import make_partition
from mycelium.learning.tasks import batched, mnist
from mycelium.learning.tasks.base import (
    BatchedTask,
    DataRequest,
    Hyper,
    cross_entropy_eval,
    get_weights,
    set_weights,
    sgd_train,
    task_spec,
)
from mycelium.learning.tasks.digits import TASK as DIGITS
from mycelium.learning.tasks.mnist import TASK as MNIST
from mycelium.learning.tasks.ops import OneByOne
from mycelium.learning.tasks.ops import batched as batched_ops

REQUEST = DataRequest(scenario="rotate", clusters=4, index=5, num_clients=24, seed=0)


def test_digits_task_is_the_learning_core() -> None:
    assert DIGITS.hyper == Hyper(mlp.EPOCHS, mlp.LEARNING_RATE, mlp.BATCH_SIZE)
    ours = DIGITS.load_data(REQUEST)
    core = make_partition(scenario="rotate", clusters=4, index=5, num_clients=24, seed=0)
    np.testing.assert_array_equal(ours.x_train, core.x_train)
    a, b = DIGITS.create_model(4), mlp.create_model(4)
    DIGITS.train(a, ours.x_train, ours.y_train, DIGITS.hyper, seed=9)
    mlp.train(b, ours.x_train, ours.y_train, seed=9)
    for x, y in zip(get_weights(a), mlp.get_weights(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert DIGITS.evaluate(a, ours.x_val, ours.y_val) == mlp.evaluate(b, ours.x_val, ours.y_val)
    assert isinstance(DIGITS, BatchedTask) and batched_ops(DIGITS) is DIGITS


def test_mnist_data_is_the_vendored_real_file() -> None:
    images, labels = mnist.load_images()
    assert images.shape == (5000, 28, 28) and images.dtype == np.float32
    assert 0.0 == images.min() and images.max() == 1.0
    assert np.bincount(labels).tolist() == [500] * 10
    data = MNIST.load_data(REQUEST)
    assert data.cluster == 1 and data.x_train.shape == (256, 784) and len(data.y_val) == 64
    assert data.x_test.shape == (1000, 784)


def test_mnist_rotate_views_are_quarter_turns() -> None:
    base = MNIST.load_data(DataRequest("rotate", 4, index=0, num_clients=24, seed=0))
    half = MNIST.load_data(DataRequest("rotate", 4, index=2, num_clients=24, seed=0))
    turned = np.rot90(base.x_train.reshape(-1, 28, 28), k=2, axes=(1, 2)).reshape(-1, 784)
    np.testing.assert_array_equal(half.x_train, turned)


def test_mnist_model_fingerprint_and_refusals() -> None:
    spec = task_spec(MNIST)
    assert [p.name for p in spec.params][:2] == ["conv1.weight", "conv1.bias"]
    assert spec == task_spec(MNIST, seed=7) and spec != task_spec(DIGITS)
    with pytest.raises(FingerprintError, match=r"model has 4 arrays, .* expects 6 \(conv1"):
        set_weights(MNIST.create_model(0), get_weights(DIGITS.create_model(0)))


def test_stacked_forward_equals_the_module() -> None:
    models = [MNIST.create_model(s) for s in (0, 1, 2)]
    x = torch.from_numpy(MNIST.load_data(REQUEST).x_val[:20])
    params = batched.stack([get_weights(m) for m in models])
    logits = mnist.stacked_forward(params, x.expand(3, *x.shape))
    with torch.no_grad():
        for b, model in enumerate(models):
            torch.testing.assert_close(logits[b], model(x), atol=1e-5, rtol=1e-4)


def test_mnist_learns_and_batched_training_equals_one_at_a_time() -> None:
    data = [MNIST.load_data(DataRequest("permute", 2, index=i, num_clients=4)) for i in range(3)]
    xs = [data[0].x_train, data[1].x_train[:50], data[2].x_train[:17]]
    ys = [data[0].y_train, data[1].y_train[:50], data[2].y_train[:17]]
    start = get_weights(MNIST.create_model(3))
    hyper = Hyper(epochs=2, lr=0.1, batch_size=32)
    trained, losses = MNIST.train_many([start] * 3, xs, ys, hyper, seeds=[5, 6, 7])
    for b in range(3):
        model = MNIST.create_model(3)
        assert MNIST.train(model, xs[b], ys[b], hyper, seed=5 + b) == pytest.approx(losses[b])
        for x, y in zip(get_weights(model), trained[b], strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
    model = MNIST.create_model(3)
    before = MNIST.evaluate(model, data[0].x_test, data[0].y_test)
    MNIST.train(model, xs[0], ys[0], Hyper(epochs=8, lr=0.2, batch_size=32), seed=0)
    after = MNIST.evaluate(model, data[0].x_test, data[0].y_test)
    assert after[1] > 0.6 > before[1] and after[0] < before[0]  # chance is 0.1
    loss, acc = MNIST.evaluate_pairs(trained, xs, ys)
    matrix_loss, matrix_acc = MNIST.evaluate_matrix(trained, xs, ys)
    np.testing.assert_allclose(loss, np.diag(matrix_loss), rtol=1e-5)
    np.testing.assert_allclose(acc, np.diag(matrix_acc))


def test_one_by_one_equals_the_batched_task() -> None:
    data = DIGITS.load_data(REQUEST)
    starts = [get_weights(DIGITS.create_model(s)) for s in (0, 1)]
    slow = OneByOne(DIGITS)
    fast_w, fast_l = DIGITS.train_many(
        starts, [data.x_train] * 2, [data.y_train] * 2, DIGITS.hyper, seeds=[1, 2]
    )
    slow_w, slow_l = slow.train_many(
        starts, [data.x_train] * 2, [data.y_train] * 2, DIGITS.hyper, seeds=[1, 2]
    )
    np.testing.assert_allclose(fast_l, slow_l, rtol=1e-5)
    for a, b in zip(fast_w, slow_w, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
    np.testing.assert_allclose(
        slow.evaluate_matrix(slow_w, [data.x_val, data.x_test], [data.y_val, data.y_test])[1],
        DIGITS.evaluate_matrix(fast_w, [data.x_val, data.x_test], [data.y_val, data.y_test])[1],
    )


@pytest.mark.parametrize("task", [DIGITS, MNIST], ids=["digits", "mnist"])
def test_proximal_term_keeps_weights_near_the_start(task: object) -> None:
    data = task.load_data(REQUEST)
    start = get_weights(task.create_model(0))

    def drift(mu: float) -> float:
        hyper = Hyper(epochs=3, lr=0.1, batch_size=32, proximal_mu=mu)
        trained, _ = task.train_many([start], [data.x_train], [data.y_train], hyper, seeds=[0])
        return sum(float(((a - b) ** 2).sum()) for a, b in zip(trained[0], start, strict=True))

    assert drift(5.0) < 0.5 * drift(0.0)


def test_generic_sgd_loop_learns_with_and_without_the_proximal_term() -> None:
    data = DIGITS.load_data(REQUEST)
    accuracies, drifts = [], []
    for mu in (0.0, 1.0):  # lr * mu < 2, or the proximal step itself diverges
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 10)
        start = get_weights(model)
        for epoch in range(5):
            sgd_train(model, data.x_train, data.y_train, Hyper(1, 0.5, 32, mu), seed=epoch)
        accuracies.append(cross_entropy_eval(model, data.x_test, data.y_test)[1])
        after = get_weights(model)
        drifts.append(sum(float(((a - b) ** 2).sum()) for a, b in zip(after, start, strict=True)))
    assert accuracies[0] > 0.6 and drifts[1] < 0.5 * drifts[0]


def test_npz_of_the_wrong_input_shape_is_a_clear_error(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    np.savez(good, x=rng.random((40, 28, 28)).astype(np.float32), y=rng.integers(0, 10, 40))
    np.savez(bad, x=rng.random((40, 64)).astype(np.float32), y=rng.integers(0, 10, 40))
    data = MNIST.load_data(DataRequest(path=good, seed=1))
    assert data.x_train.shape == (24, 784) and len(data.y_val) == 8
    with pytest.raises(
        ValueError, match=r"x must have shape \(n, 784\) or \(n, 28, 28\) for mnist"
    ):
        MNIST.load_data(DataRequest(path=bad))
    with pytest.raises(ValueError, match="task mnist has no scenario 'spiral'"):
        MNIST.load_data(DataRequest(scenario="spiral"))
