"""Personal models, one implementation for the simulation and the node agent (issue 26).

Beside the model of its group, a grouped node keeps a *personal* model, the group model
adapted to its own data, and predicts with it when it scores better than the plain group
model on the node's own validation split (ties keep the group model: :func:`prefers`). The
adaptation is ``personal`` (the bench's and the node's ``--personal``):

* ``ft`` (default): the group model fine-tuned on the node's training split with the task's
  adaptation budget (:func:`~mycelium.learning.tasks.base.adaptation_hyper`: one epoch of its
  own ``train`` unless the task sets ``adapt_hyper``), seeded by :func:`adaptation_seed`;
* ``prior``: the group model with the node's label log-prior added to its logits (no
  training; a task without the hook has no such model);
* ``none``: the plain group model.

The simulation (:mod:`mycelium.learning.sim.personal`) adapts many clients at once through
the task's batched ``train_many`` with the same budget and seeds (one model of it is the
task's ``train``: tested); the node agent's warm trainer calls :func:`personal_model` once per
group model it receives. Neither sends the personal model anywhere: groups aggregate their
members' plain updates, and placement scores plain group models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mycelium.config import PERSONAL
from mycelium.learning.tasks.base import Task, Weights, adapt, get_weights, set_weights
from mycelium.learning.tasks.ops import log_prior_of

if TYPE_CHECKING:
    from torch import nn

METHODS = ("ft", "prior", "none")
ADAPT_SALT = 5  # seeds of the fine-tuning, apart from those of the rounds
assert PERSONAL in METHODS


def check_personal(method: str) -> None:
    """ValueError naming the choices unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown --personal {method!r}; choose from {', '.join(METHODS)}")


def adaptation_seed(seed: int, round_: int, client: int = 0) -> int:
    """The fine-tuning seed of (run or node seed, round, client), independent of the rounds'
    training seeds (the simulation's ``seed_of`` with :data:`ADAPT_SALT`)."""
    return int(np.random.SeedSequence([seed, round_, client, ADAPT_SALT]).generate_state(1)[0])


def prefers(
    personal_val: Sequence[float] | np.ndarray, group_val: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Per node: does it predict with its personal model? Only when that scores strictly
    better than the plain group model on the node's validation split (ties keep the group's)."""
    return np.asarray(personal_val, np.float64) > np.asarray(group_val, np.float64)


@dataclass(frozen=True)
class PersonalModel:
    """A personal model: ``weights``, with ``log_prior`` added to its logits when given."""

    weights: Weights
    log_prior: np.ndarray | None = None


def personal_model(
    task: Task,
    scratch: nn.Module,
    group: Weights,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    method: str,
    seed: int,
) -> PersonalModel | None:
    """The ``method`` personal model of a node with training data (x_train, y_train) from
    the group model ``group``; None for ``none`` (and for ``prior`` when the task has no
    label-prior hook). ``scratch``: a module of the task, overwritten (``ft``)."""
    check_personal(method)
    if method == "none":
        return None
    if method == "prior":
        prior = log_prior_of(task, y_train)
        return None if prior is None else PersonalModel([a.copy() for a in group], prior)
    set_weights(scratch, group)
    adapt(task, scratch, x_train, y_train, seed=seed)
    return PersonalModel(get_weights(scratch))
