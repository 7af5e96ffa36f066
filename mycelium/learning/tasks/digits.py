"""``digits``: the MLP 64-64-10 on scikit-learn's 8x8 digits (:mod:`mycelium.learning.model`,
:mod:`mycelium.learning.data`), unchanged: the same arithmetic, splits and results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mycelium.learning import data as data_mod
from mycelium.learning.tasks.base import BatchedImageTask, Hyper, Weights

if TYPE_CHECKING:
    from torch import nn


class DigitsTask(BatchedImageTask):
    """The built-in default task; the batched methods are :mod:`mycelium.learning.model`'s."""

    name = "digits"
    dataset = data_mod.DIGITS
    hyper = Hyper(epochs=2, lr=0.5, batch_size=32)  # mycelium.model's constants (tested)

    def create_model(self, seed: int) -> nn.Module:
        from mycelium.learning import model

        return model.create_model(seed)

    def train_many(
        self,
        weights: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        hyper: Hyper,
        *,
        seeds: Sequence[int],
    ) -> tuple[list[Weights], np.ndarray]:
        from mycelium.learning import model

        return model.train_many(
            weights,
            xs,
            ys,
            epochs=hyper.epochs,
            lr=hyper.lr,
            batch_size=hyper.batch_size,
            seeds=seeds,
            proximal_mu=hyper.proximal_mu,
        )

    def evaluate_matrix(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        from mycelium.learning import model

        return model.evaluate_matrix(models, xs, ys, log_priors=log_priors)

    def evaluate_pairs(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        from mycelium.learning import model

        return model.evaluate_pairs(models, xs, ys, log_priors=log_priors)


TASK = DigitsTask()
