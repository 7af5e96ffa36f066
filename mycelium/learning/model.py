"""The MLP (64-64-10) every node trains, in plain torch, plus batched versions for the simulation.

``train`` and ``evaluate`` on one ``nn.Module`` are the batched functions run with a batch of
one model, so the real node and the simulation execute the same arithmetic: plain SGD (no
momentum, no weight decay) on the mean cross-entropy of mini-batches drawn from a permutation
seeded per epoch by ``seed``.

Weights are a list of numpy arrays in ``nn.Module.state_dict`` order:
``[w1 (64, 64), b1 (64,), w2 (10, 64), b2 (10,)]`` (torch's (out, in) layout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

INPUT_SIZE = 64
HIDDEN_SIZE = 64
NUM_CLASSES = 10
EPOCHS = 2
LEARNING_RATE = 0.5
BATCH_SIZE = 32
_EVAL_CHUNK_ELEMENTS = 8_000_000  # hidden activations per evaluation chunk (32 MB)

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
    count = len(weights)
    if not count == len(xs) == len(ys) == len(seeds):
        raise ValueError("weights, xs, ys and seeds must have the same length")
    if min(len(y) for y in ys) < 1:
        raise ValueError("every model needs at least one training sample")
    params = [p.requires_grad_() for p in _stack(weights)]
    anchors = [p.detach().clone() for p in params] if proximal_mu else None
    x_pad, y_pad = _pad(xs, ys)
    sizes = np.array([len(y) for y in ys])
    rngs = [np.random.default_rng(seed) for seed in seeds]
    loss_sum = torch.zeros(count)
    steps = torch.zeros(count)
    for _ in range(epochs):
        order = _epoch_order(rngs, sizes, batch_size)
        for start in range(0, order.shape[1], batch_size):
            index = torch.from_numpy(order[:, start : start + batch_size])
            batch_loss, active = _sgd_step(
                params, x_pad, y_pad, index, lr, _Proximal(proximal_mu, anchors)
            )
            loss_sum += batch_loss * active
            steps += active
    return _unstack(params), (loss_sum / steps.clamp(min=1)).numpy()


def evaluate_matrix(
    models: Sequence[Weights], xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy), each of shape (models, datasets): every model on every dataset."""
    if min(len(y) for y in ys) < 1:
        raise ValueError("every dataset needs at least one sample")
    x_all = torch.from_numpy(np.concatenate([np.asarray(x, np.float32) for x in xs]))
    y_all = torch.from_numpy(np.concatenate([np.asarray(y, np.int64) for y in ys]))
    starts = np.cumsum([0] + [len(y) for y in ys[:-1]])
    sizes = np.array([len(y) for y in ys], dtype=np.float64)
    w1, b1, w2, b2 = _stack(models)
    chunk = max(1, _EVAL_CHUNK_ELEMENTS // (len(y_all) * HIDDEN_SIZE))
    losses, hits = [], []
    with torch.no_grad():
        for lo in range(0, len(models), chunk):
            hidden = torch.relu(
                torch.matmul(x_all, w1[lo : lo + chunk]) + b1[lo : lo + chunk, None]
            )
            logits = torch.matmul(hidden, w2[lo : lo + chunk]) + b2[lo : lo + chunk, None]
            ce = nn.functional.cross_entropy(
                logits.transpose(1, 2), y_all.expand(len(logits), -1), reduction="none"
            )
            losses.append(ce.numpy())
            hits.append((logits.argmax(dim=2) == y_all).numpy())
    loss = np.add.reduceat(np.concatenate(losses).astype(np.float64), starts, axis=1) / sizes
    accuracy = np.add.reduceat(np.concatenate(hits).astype(np.float64), starts, axis=1) / sizes
    return loss, accuracy


def evaluate_pairs(
    models: Sequence[Weights], xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) of model b on dataset b, for each b, in one batched computation."""
    if not len(models) == len(xs) == len(ys):
        raise ValueError("models and datasets must have the same length")
    if min(len(y) for y in ys) < 1:
        raise ValueError("every dataset needs at least one sample")
    w1, b1, w2, b2 = _stack(models)
    x_pad, y_pad = _pad(xs, ys)
    sizes = torch.tensor([len(y) for y in ys], dtype=torch.float64)
    mask = torch.arange(x_pad.shape[1])[None, :] < sizes[:, None]
    with torch.no_grad():
        hidden = torch.relu(torch.baddbmm(b1[:, None], x_pad, w1))
        logits = torch.baddbmm(b2[:, None], hidden, w2)
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), y_pad, reduction="none")
        hits = (logits.argmax(dim=2) == y_pad) & mask
        loss = (ce.double() * mask).sum(dim=1) / sizes
        accuracy = hits.double().sum(dim=1) / sizes
    return loss.numpy(), accuracy.numpy()


def _sgd_step(
    params: list[torch.Tensor],
    x_pad: torch.Tensor,
    y_pad: torch.Tensor,
    index: torch.Tensor,
    lr: float,
    proximal: _Proximal,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of every model on its rows ``index`` (-1 = padding); (losses, active)."""
    w1, b1, w2, b2 = params
    mask = (index >= 0).float()
    rows = torch.arange(len(index))[:, None]
    xb, yb = x_pad[rows, index.clamp(min=0)], y_pad[rows, index.clamp(min=0)]
    hidden = torch.relu(torch.baddbmm(b1[:, None], xb, w1))
    logits = torch.baddbmm(b2[:, None], hidden, w2)
    ce = nn.functional.cross_entropy(logits.transpose(1, 2), yb, reduction="none")
    per_model = (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    objective = per_model.sum()
    if proximal.mu and proximal.anchors is not None:
        objective = objective + proximal.term(params, mask.sum(dim=1) > 0)
    objective.backward()
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad
            param.grad = None
    return per_model.detach(), (mask.sum(dim=1) > 0).float()


class _Proximal(NamedTuple):
    """FedProx's term: ``mu / 2 * ||w - anchor||^2`` per model (models with a batch only)."""

    mu: float
    anchors: list[torch.Tensor] | None

    def term(self, params: list[torch.Tensor], active: torch.Tensor) -> torch.Tensor:
        assert self.anchors is not None
        squares = [
            ((p - a) ** 2).reshape(len(p), -1).sum(dim=1)
            for p, a in zip(params, self.anchors, strict=True)
        ]
        return 0.5 * self.mu * (torch.stack(squares).sum(dim=0) * active).sum()


def _epoch_order(rngs: list[np.random.Generator], sizes: np.ndarray, batch_size: int) -> np.ndarray:
    """Per-model row permutations, padded with -1 to a whole number of batches."""
    width = math.ceil(int(sizes.max()) / batch_size) * batch_size
    order = np.full((len(rngs), width), -1, dtype=np.int64)
    for b, (rng, size) in enumerate(zip(rngs, sizes, strict=True)):
        order[b, :size] = rng.permutation(int(size))
    return order


def _pad(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(y) for y in ys)
    x_pad = np.zeros((len(xs), longest, INPUT_SIZE), dtype=np.float32)
    y_pad = np.zeros((len(ys), longest), dtype=np.int64)
    for b, (x, y) in enumerate(zip(xs, ys, strict=True)):
        x_pad[b, : len(y)] = x
        y_pad[b, : len(y)] = y
    return torch.from_numpy(x_pad), torch.from_numpy(y_pad)


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
