"""The MLP, its batched training/evaluation, and the weights codec."""

from __future__ import annotations

import numpy as np
import pytest

from mycelium.learning.codec import bytes_to_weights, weights_to_bytes
from mycelium.learning.data import make_federation
from mycelium.learning.model import (
    create_model,
    evaluate,
    evaluate_matrix,
    evaluate_pairs,
    get_weights,
    set_weights,
    train,
    train_many,
)
from tests.conftest import sha256_hex

FED = make_federation(scenario="permute", clusters=2, num_clients=4, seed=0)


def test_create_model_depends_only_on_seed() -> None:
    a, b, c = (get_weights(create_model(s)) for s in (1, 1, 2))
    assert [w.shape for w in a] == [(64, 64), (64,), (10, 64), (10,)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_training_learns_and_is_reproducible() -> None:
    c = FED[0]
    model = create_model(0)
    before = evaluate(model, c.x_test, c.y_test)
    losses = [train(model, c.x_train, c.y_train, seed=e) for e in range(5)]
    after = evaluate(model, c.x_test, c.y_test)
    assert after[1] > before[1] + 0.5 and after[0] < before[0]
    assert losses[-1] < losses[0]
    again = create_model(0)
    for e in range(5):
        train(again, c.x_train, c.y_train, seed=e)
    assert all(
        np.array_equal(x, y) for x, y in zip(get_weights(model), get_weights(again), strict=True)
    )


def test_batched_training_equals_one_model_at_a_time() -> None:
    start = get_weights(create_model(3))
    uneven = [FED[0].x_train, FED[1].x_train[:50], FED[2].x_train[:17]]
    labels = [FED[0].y_train, FED[1].y_train[:50], FED[2].y_train[:17]]
    batched, losses = train_many([start] * 3, uneven, labels, seeds=[5, 6, 7])
    for b in range(3):
        model = create_model(3)
        loss = train(model, uneven[b], labels[b], seed=5 + b)
        assert loss == pytest.approx(losses[b], rel=1e-5)
        for x, y in zip(get_weights(model), batched[b], strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)


def test_pairs_are_the_diagonal_of_the_matrix() -> None:
    models = [get_weights(create_model(s)) for s in range(4)]
    xs, ys = [c.x_val for c in FED], [c.y_val for c in FED]
    loss, acc = evaluate_pairs(models, xs, ys)
    m_loss, m_acc = evaluate_matrix(models, xs, ys)
    np.testing.assert_allclose(loss, np.diag(m_loss), rtol=1e-5)
    np.testing.assert_array_equal(acc, np.diag(m_acc))


def test_set_weights_rejects_wrong_shapes() -> None:
    model = create_model()
    with pytest.raises(ValueError, match="expected 4 arrays"):
        set_weights(model, [np.zeros((64, 64))])
    bad = get_weights(model)
    bad[2] = np.zeros((64, 10), np.float32)
    with pytest.raises(ValueError, match="expected shape"):
        set_weights(model, bad)


def test_codec_round_trips_and_hashes() -> None:
    weights = get_weights(create_model(0))
    data = weights_to_bytes(weights)
    back = bytes_to_weights(data)
    assert all(np.array_equal(x, y) for x, y in zip(weights, back, strict=True))
    assert sha256_hex(data) == sha256_hex(weights_to_bytes(back))
    assert len(sha256_hex(data)) == 64
    model = create_model(9)
    set_weights(model, back)
    assert evaluate(model, FED[0].x_val, FED[0].y_val) == evaluate(
        _with(weights), FED[0].x_val, FED[0].y_val
    )


def _with(weights: list[np.ndarray]):
    model = create_model()
    set_weights(model, weights)
    return model


def test_codec_keeps_order_past_ten_arrays() -> None:
    arrays = [np.full(3, i, np.float32) for i in range(12)]
    assert [int(a[0]) for a in bytes_to_weights(weights_to_bytes(arrays))] == list(range(12))


@pytest.mark.parametrize("junk", [b"", b"not a model", b"PK\x03\x04broken"])
def test_codec_rejects_junk(junk: bytes) -> None:
    with pytest.raises(ValueError, match="not a weights file"):
        bytes_to_weights(junk)
