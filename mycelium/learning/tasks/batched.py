"""A batched training and evaluation engine for any model written as a *stacked forward*.

``forward(params, x)`` takes ``params`` = the model's ``state_dict`` arrays stacked over B
models (tensor i has shape ``(B, *shape_i)``) and ``x`` of shape ``(B, n, features)``, and
returns logits ``(B, n, classes)``: model b on rows ``x[b]``. From that one function this
module trains B models at once (plain SGD on the mean cross-entropy of seeded mini-batches,
FedProx's term optional) and evaluates them, so a task's ``train``/``evaluate`` can be the
batched functions run with a batch of one and the simulation runs the same arithmetic as a
node. :class:`StackedTask` is the task base class built on it;
:mod:`mycelium.learning.tasks.mnist` is one.

The ``*_stacked`` functions take the stacked parameters themselves, in whatever layout
their ``forward`` expects: :mod:`mycelium.learning.model` keeps its MLP's (in, out) layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mycelium.learning.tasks.base import BatchedImageTask, Hyper, Weights

Forward = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]

torch.set_num_threads(1)  # like mycelium.model: one thread per process, reproducible sums

EVAL_CHUNK_ELEMENTS = 8_000_000  # input values per evaluation forward (32 MB of float32)
EVAL_MODELS_PER_CHUNK = 16


def stack(weights: Sequence[Weights]) -> list[torch.Tensor]:
    """Array i of every model stacked into one float32 tensor ``(B, *shape_i)``."""
    return [
        torch.from_numpy(np.stack([np.asarray(w[i], np.float32) for w in weights]))
        for i in range(len(weights[0]))
    ]


def unstack(params: Sequence[torch.Tensor]) -> list[Weights]:
    arrays = [p.detach().numpy() for p in params]
    return [[a[b].copy() for a in arrays] for b in range(len(arrays[0]))]


def train_many(
    forward: Forward,
    weights: Sequence[Weights],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    hyper: Hyper,
    *,
    seeds: Sequence[int],
) -> tuple[list[Weights], np.ndarray]:
    """Train B models, model b on (xs[b], ys[b]); returns the weights and each model's mean
    mini-batch cross-entropy (FedProx's term is in the gradient, not in the loss)."""
    if len(weights) != len(seeds):
        raise ValueError("weights, xs, ys and seeds must have the same length")
    params, losses = train_stacked(forward, stack(weights), xs, ys, hyper, seeds=seeds)
    return unstack(params), losses


def train_stacked(
    forward: Forward,
    stacked: list[torch.Tensor],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    hyper: Hyper,
    *,
    seeds: Sequence[int],
) -> tuple[list[torch.Tensor], np.ndarray]:
    """:func:`train_many` on parameters already stacked (B = ``len(stacked[0])``): returns
    the trained stacked parameters and the losses."""
    batch_size = hyper.batch_size
    count = len(stacked[0])
    if not count == len(xs) == len(ys) == len(seeds):
        raise ValueError("weights, xs, ys and seeds must have the same length")
    if min(len(y) for y in ys) < 1:
        raise ValueError("every model needs at least one training sample")
    params = [p.requires_grad_() for p in stacked]
    anchors = [p.detach().clone() for p in params]
    x_pad, y_pad, sizes = pad(xs, ys)
    rngs = [np.random.default_rng(seed) for seed in seeds]
    loss_sum, steps = torch.zeros(count), torch.zeros(count)
    for _ in range(hyper.epochs):
        order = epoch_order(rngs, sizes, batch_size)
        for start in range(0, order.shape[1], batch_size):
            index = torch.from_numpy(order[:, start : start + batch_size])
            mask = (index >= 0).float()
            rows = torch.arange(count)[:, None]
            safe = index.clamp(min=0)
            logits = forward(params, x_pad[rows, safe])
            ce = nn.functional.cross_entropy(
                logits.transpose(1, 2), y_pad[rows, safe], reduction="none"
            )
            per_model = (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            active = (mask.sum(dim=1) > 0).float()
            objective = per_model.sum()
            if hyper.proximal_mu:
                objective = objective + proximal_term(params, anchors, active, hyper.proximal_mu)
            objective.backward()
            with torch.no_grad():
                for param in params:
                    if param.grad is not None:  # a parameter the loss does not reach
                        param -= hyper.lr * param.grad
                    param.grad = None
            loss_sum += per_model.detach() * active
            steps += active
    return params, (loss_sum / steps.clamp(min=1)).numpy()


def proximal_term(
    params: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    active: torch.Tensor,
    mu: float,
) -> torch.Tensor:
    """FedProx: sum over active models of ``mu / 2 * ||w_b - anchor_b||^2``."""
    squares = [
        ((p - a) ** 2).reshape(len(p), -1).sum(dim=1) for p, a in zip(params, anchors, strict=True)
    ]
    return 0.5 * mu * (torch.stack(squares).sum(dim=0) * active).sum()


def evaluate_matrix(
    forward: Forward,
    models: Sequence[Weights],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    *,
    log_priors: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy), each of shape (models, datasets): every model on every dataset;
    with ``log_priors`` (one label log-prior per dataset) added to every model's logits."""
    return evaluate_stacked(forward, stack(models), xs, ys, log_priors=log_priors)


def evaluate_stacked(
    forward: Forward,
    params: list[torch.Tensor],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    *,
    log_priors: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate_matrix` on parameters already stacked (B = ``len(params[0])``)."""
    if min(len(y) for y in ys) < 1:
        raise ValueError("every dataset needs at least one sample")
    count = len(params[0])
    x_all = torch.from_numpy(np.concatenate([np.asarray(x, np.float32) for x in xs]))
    y_all = torch.from_numpy(np.concatenate([np.asarray(y, np.int64) for y in ys]))
    shift = row_shift(log_priors, ys)
    starts = np.cumsum([0] + [len(y) for y in ys[:-1]])
    sizes = np.array([len(y) for y in ys], dtype=np.float64)
    model_step = min(count, EVAL_MODELS_PER_CHUNK)
    row_step = max(1, EVAL_CHUNK_ELEMENTS // (model_step * x_all[0].numel()))
    ce_rows, hit_rows = [], []
    with torch.no_grad():
        for lo in range(0, count, model_step):
            chunk = [p[lo : lo + model_step] for p in params]
            ce_cols, hit_cols = [], []
            for r in range(0, len(y_all), row_step):
                xb, yb = x_all[r : r + row_step], y_all[r : r + row_step]
                logits = forward(chunk, xb.expand(len(chunk[0]), *xb.shape))
                if shift is not None:
                    logits = logits + shift[r : r + row_step]
                ce = nn.functional.cross_entropy(
                    logits.transpose(1, 2), yb.expand(len(logits), -1), reduction="none"
                )
                ce_cols.append(ce.numpy())
                hit_cols.append((logits.argmax(dim=2) == yb).numpy())
            ce_rows.append(np.concatenate(ce_cols, axis=1))
            hit_rows.append(np.concatenate(hit_cols, axis=1))
    ce_all = np.concatenate(ce_rows).astype(np.float64)
    hits = np.concatenate(hit_rows).astype(np.float64)
    loss = np.add.reduceat(ce_all, starts, axis=1) / sizes
    return loss, np.add.reduceat(hits, starts, axis=1) / sizes


def evaluate_pairs(
    forward: Forward,
    models: Sequence[Weights],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    *,
    log_priors: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) of model b on dataset b, for each b (``log_priors``: as for
    :func:`evaluate_matrix`)."""
    if len(models) != len(xs):
        raise ValueError("models and datasets must have the same length")
    return evaluate_pairs_stacked(forward, stack(models), xs, ys, log_priors=log_priors)


def evaluate_pairs_stacked(
    forward: Forward,
    params: list[torch.Tensor],
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    *,
    log_priors: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate_pairs` on parameters already stacked (B = ``len(params[0])``)."""
    count = len(params[0])
    if not count == len(xs) == len(ys):
        raise ValueError("models and datasets must have the same length")
    if min(len(y) for y in ys) < 1:
        raise ValueError("every dataset needs at least one sample")
    x_pad, y_pad, sizes = pad(xs, ys)
    prior = None if log_priors is None else torch.from_numpy(prior_rows(log_priors))[:, None]
    mask = torch.arange(x_pad.shape[1])[None, :] < torch.from_numpy(sizes)[:, None]
    step = max(1, EVAL_CHUNK_ELEMENTS // max(1, count * x_pad.shape[2]))
    ce_sum = torch.zeros(count, dtype=torch.float64)
    hit_sum = torch.zeros(count, dtype=torch.float64)
    with torch.no_grad():
        for lo in range(0, x_pad.shape[1], step):
            logits = forward(params, x_pad[:, lo : lo + step])
            if prior is not None:
                logits = logits + prior
            yb, mb = y_pad[:, lo : lo + step], mask[:, lo : lo + step]
            ce = nn.functional.cross_entropy(logits.transpose(1, 2), yb, reduction="none")
            ce_sum += (ce.double() * mb).sum(dim=1)
            hit_sum += ((logits.argmax(dim=2) == yb) & mb).double().sum(dim=1)
    denominator = torch.from_numpy(sizes).double()
    return (ce_sum / denominator).numpy(), (hit_sum / denominator).numpy()


def row_shift(
    log_priors: Sequence[np.ndarray] | None, ys: Sequence[np.ndarray]
) -> torch.Tensor | None:
    """Each dataset's log prior repeated for its rows, ``(rows, classes)``; or None."""
    if log_priors is None:
        return None
    if len(log_priors) != len(ys):
        raise ValueError("log_priors and datasets must have the same length")
    return torch.from_numpy(np.repeat(prior_rows(log_priors), [len(y) for y in ys], axis=0))


def prior_rows(log_priors: Sequence[np.ndarray]) -> np.ndarray:
    """The log priors as one float32 array ``(datasets, classes)``."""
    return np.stack([np.asarray(p, np.float32) for p in log_priors])


def epoch_order(rngs: list[np.random.Generator], sizes: np.ndarray, batch_size: int) -> np.ndarray:
    """Per-model row permutations, padded with -1 to a whole number of batches."""
    width = math.ceil(int(sizes.max()) / batch_size) * batch_size
    order = np.full((len(rngs), width), -1, dtype=np.int64)
    for b, (rng, size) in enumerate(zip(rngs, sizes, strict=True)):
        order[b, :size] = rng.permutation(int(size))
    return order


def pad(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(x (B, longest, features), y (B, longest), sizes) zero-padded."""
    sizes = np.array([len(y) for y in ys])
    features = int(np.asarray(xs[0]).reshape(len(ys[0]), -1).shape[1])
    x_pad = np.zeros((len(xs), int(sizes.max()), features), dtype=np.float32)
    y_pad = np.zeros((len(ys), int(sizes.max())), dtype=np.int64)
    for b, (x, y) in enumerate(zip(xs, ys, strict=True)):
        x_pad[b, : len(y)] = np.asarray(x).reshape(len(y), -1)
        y_pad[b, : len(y)] = y
    return torch.from_numpy(x_pad), torch.from_numpy(y_pad), sizes


class StackedTask(BatchedImageTask):
    """A :class:`BatchedImageTask` from one *stacked forward* (see
    :mod:`mycelium.learning.tasks.batched`): ``stacked_forward(params, x)`` runs B models."""

    def stacked_forward(self, params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def train_many(
        self,
        weights: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        hyper: Hyper,
        *,
        seeds: Sequence[int],
    ) -> tuple[list[Weights], np.ndarray]:
        return train_many(self.stacked_forward, weights, xs, ys, hyper, seeds=seeds)

    def evaluate_matrix(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_matrix(self.stacked_forward, models, xs, ys, log_priors=log_priors)

    def evaluate_pairs(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_pairs(self.stacked_forward, models, xs, ys, log_priors=log_priors)
