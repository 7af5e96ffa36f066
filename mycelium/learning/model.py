"""The MLP (64-64-10) every node trains, in plain torch, plus batched versions for the simulation.

``train`` and ``evaluate`` on one ``nn.Module`` are the batched functions run with a batch of
one model, so the real node and the simulation execute the same arithmetic: plain SGD (no
momentum, no weight decay) on the mean cross-entropy of mini-batches drawn from a permutation
seeded per epoch by ``seed``. The batched loops are :mod:`mycelium.learning.tasks.batched`'s,
run on this MLP's own stacked (in, out) layout, so every task shares one training engine.

Weights are a list of numpy arrays in ``nn.Module.state_dict`` order:
``[w1 (64, 64), b1 (64,), w2 (10, 64), b2 (10,)]`` (torch's (out, in) layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mycelium.learning.tasks import batched
from mycelium.learning.tasks.base import Hyper

INPUT_SIZE = 64
HIDDEN_SIZE = 64
NUM_CLASSES = 10
EPOCHS = 2
LEARNING_RATE = 0.5
BATCH_SIZE = 32

torch.set_num_threads(1)

Weights = list[np.ndarray]


def create_model(seed: int = 0) -> nn.Module:
    """A fresh MLP whose initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(INPUT_SIZE, HIDDEN_SIZE), nn.ReLU(), nn.Linear(HIDDEN_SIZE, NUM_CLASSES)
        )


def get_weights(model: nn.Module) -> Weights:
    """Copies of the model's parameters as float32 numpy arrays."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    """Load ``arrays`` (``get_weights`` order and shapes) into ``model``; ValueError if wrong."""
    keys = list(model.state_dict().keys())
    if len(arrays) != len(keys):
        raise ValueError(f"expected {len(keys)} arrays, got {len(arrays)}")
    state = {}
    for key, array, current in zip(keys, arrays, model.state_dict().values(), strict=True):
        if tuple(array.shape) != tuple(current.shape):
            raise ValueError(f"{key}: expected shape {tuple(current.shape)}, got {array.shape}")
        state[key] = torch.as_tensor(np.asarray(array, dtype=np.float32))
    model.load_state_dict(state)


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = EPOCHS,
    lr: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    proximal_mu: float = 0.0,
) -> float:
    """Train ``model`` in place on (x, y); returns the mean mini-batch loss (without the
    FedProx term ``proximal_mu / 2 * ||w - w_start||^2`` that the gradient includes)."""
    weights, losses = train_many(
        [get_weights(model)],
        [x],
        [y],
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seeds=[seed],
        proximal_mu=proximal_mu,
    )
    set_weights(model, weights[0])
    return float(losses[0])


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on (x, y)."""
    loss, accuracy = evaluate_matrix([get_weights(model)], [x], [y])
    return float(loss[0, 0]), float(accuracy[0, 0])


def train_many(
    weights: Sequence[Weights],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    *,
    epochs: int = EPOCHS,
    lr: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    seeds: Sequence[int],
    proximal_mu: float = 0.0,
) -> tuple[list[Weights], np.ndarray]:
    """Train B independent models, model b on (xs[b], ys[b]), in one batched computation.

    ``proximal_mu`` > 0 adds FedProx's ``mu / 2 * ||w - w_start||^2`` to each model's loss.
    Returns the trained weights and each model's mean mini-batch loss.
    """
    if len(weights) != len(seeds):
        raise ValueError("weights, xs, ys and seeds must have the same length")
    hyper = Hyper(epochs=epochs, lr=lr, batch_size=batch_size, proximal_mu=proximal_mu)
    params, losses = batched.train_stacked(_forward, _stack(weights), xs, ys, hyper, seeds=seeds)
    return _unstack(params), losses


def evaluate_matrix(
    models: Sequence[Weights],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    *,
    log_priors: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy), each of shape (models, datasets): every model on every dataset
    (``log_priors``: see :func:`mycelium.learning.tasks.batched.evaluate_matrix`)."""
    stacked = _stack(models)
    return batched.evaluate_stacked(_shared_input_forward, stacked, xs, ys, log_priors=log_priors)


def evaluate_pairs(
    models: Sequence[Weights],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    *,
    log_priors: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) of model b on dataset b, for each b, in one batched computation."""
    stacked = _stack(models)
    return batched.evaluate_pairs_stacked(_forward, stacked, xs, ys, log_priors=log_priors)


def _forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits (B, n, classes) of B MLPs in :func:`_stack`'s layout, model b on ``x[b]``."""
    w1, b1, w2, b2 = params
    hidden = torch.relu(torch.baddbmm(b1[:, None], x, w1))
    return torch.baddbmm(b2[:, None], hidden, w2)


def _shared_input_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """:func:`_forward` when every model sees the same rows (``x`` an expanded view): one
    broadcast matmul over the rows, as the evaluation of all models on all data was measured."""
    w1, b1, w2, b2 = params
    hidden = torch.relu(torch.matmul(x[0], w1) + b1[:, None])
    return torch.matmul(hidden, w2) + b2[:, None]


def _stack(weights: Sequence[Weights]) -> list[torch.Tensor]:
    """[w1 (B, in, hidden), b1 (B, hidden), w2 (B, hidden, out), b2 (B, out)] float32 tensors."""
    w1, b1, w2, b2 = (np.stack([np.asarray(w[i], np.float32) for w in weights]) for i in range(4))
    return [
        torch.from_numpy(a)
        for a in (w1.transpose(0, 2, 1).copy(), b1, w2.transpose(0, 2, 1).copy(), b2)
    ]


def _unstack(params: list[torch.Tensor]) -> list[Weights]:
    w1, b1, w2, b2 = (p.detach().numpy() for p in params)
    return [[w1[b].T.copy(), b1[b].copy(), w2[b].T.copy(), b2[b].copy()] for b in range(len(w1))]
