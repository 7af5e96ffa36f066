"""Batched operations of any task: its own when it has them, else one model at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mycelium.learning.data import ClientData
from mycelium.learning.tasks.base import (
    BatchedTask,
    DataRequest,
    Hyper,
    PriorTask,
    Task,
    Weights,
    get_weights,
    set_weights,
)

if TYPE_CHECKING:
    from torch import nn


def batched(task: Task) -> BatchedTask:
    """``task`` itself when it has ``train_many``/``evaluate_matrix``/``evaluate_pairs``,
    else a :class:`OneByOne` wrapper running its ``train``/``evaluate`` per model."""
    if isinstance(task, BatchedTask):
        return task
    return OneByOne(task)


def log_prior_of(task: Task, y_train: np.ndarray) -> np.ndarray | None:
    """The node's label log-prior for prior-shifted scores, or None when ``task`` has no
    :class:`~mycelium.learning.tasks.base.PriorTask` hook (its scores are plain accuracy)."""
    if isinstance(task, PriorTask):
        return np.asarray(task.label_log_prior(y_train), np.float32)
    return None


class OneByOne:
    """The batched interface over a task's ``train``/``evaluate`` on one module (slower,
    same results as the node's own calls)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.name, self.hyper, self.scenarios = task.name, task.hyper, task.scenarios
        self._model = task.create_model(0)  # scratch module, reloaded for every call

    # The task's own calls, so that the wrapper is a whole BatchedTask.
    def create_model(self, seed: int) -> nn.Module:
        return self.task.create_model(seed)

    def load_data(self, request: DataRequest) -> ClientData:
        return self.task.load_data(request)

    def train(
        self, model: nn.Module, x: np.ndarray, y: np.ndarray, hyper: Hyper, *, seed: int
    ) -> float:
        return self.task.train(model, x, y, hyper, seed=seed)

    def evaluate(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return self.task.evaluate(model, x, y)

    def train_many(
        self,
        weights: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        hyper: Hyper,
        *,
        seeds: Sequence[int],
    ) -> tuple[list[Weights], np.ndarray]:
        if not len(weights) == len(xs) == len(ys) == len(seeds):
            raise ValueError("weights, xs, ys and seeds must have the same length")
        trained, losses = [], []
        for start, x, y, seed in zip(weights, xs, ys, seeds, strict=True):
            set_weights(self._model, start)
            losses.append(self.task.train(self._model, x, y, hyper, seed=seed))
            trained.append(get_weights(self._model))
        return trained, np.asarray(losses, dtype=np.float64)

    def evaluate_matrix(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        loss = np.zeros((len(models), len(xs)))
        accuracy = np.zeros((len(models), len(xs)))
        priors = [None] * len(xs) if log_priors is None else list(log_priors)
        for m, weights in enumerate(models):
            set_weights(self._model, weights)
            for d, (x, y, prior) in enumerate(zip(xs, ys, priors, strict=True)):
                loss[m, d], accuracy[m, d] = self._evaluate(x, y, prior)
        return loss, accuracy

    def _evaluate(
        self, x: np.ndarray, y: np.ndarray, prior: np.ndarray | None
    ) -> tuple[float, float]:
        if prior is None:
            return self.task.evaluate(self._model, x, y)
        if not isinstance(self.task, PriorTask):
            raise TypeError(f"task {self.task.name} has no prior-shifted evaluate")
        return self.task.evaluate(self._model, x, y, log_prior=prior)

    def evaluate_pairs(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if not len(models) == len(xs) == len(ys):
            raise ValueError("models and datasets must have the same length")
        priors = [None] * len(xs) if log_priors is None else list(log_priors)
        pairs = [
            self.evaluate_matrix([w], [x], [y], log_priors=None if p is None else [p])
            for w, x, y, p in zip(models, xs, ys, priors, strict=True)
        ]
        return (
            np.array([loss[0, 0] for loss, _ in pairs]),
            np.array([acc[0, 0] for _, acc in pairs]),
        )
