"""Personal models, one implementation for the simulation and the node agent (issue 26).

Beside the model of its group, a grouped node keeps a *personal* model, the group model
adapted to its own data, and its own *local-only* model, and predicts with whichever of the
three scores best on its own validation split (:func:`choose`: ties keep the group model,
then the personal one). The adaptation is ``personal`` (the bench's and the node's
``--personal``):

* ``ft`` (default): the group model fine-tuned on the node's training split with the task's
  adaptation budget (:func:`~mycelium.learning.tasks.base.adaptation_hyper`: one epoch of its
  own ``train`` unless the task sets ``adapt_hyper``), seeded by :func:`adaptation_seed`;
* ``prior``: the group model with the node's label log-prior added to its logits (no
  training; a task without the hook has no such model);
* ``none``: the plain group model (no personal model and no fall-back on the local one).

The simulation (:mod:`mycelium.learning.sim.personal`) adapts many clients at once through
the task's batched ``train_many`` with the same budget and seeds (one model of it is the
task's ``train``: tested) and trains each node's local-only model every round as its
``local`` algorithm does; the node agent's warm trainer calls :func:`personal_model` once per
group model it receives and trains its local-only model (warmed up before it joined) one more
round each time. Neither sends the personal model anywhere: groups aggregate their
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
LOCAL_SALT = 0  # seeds of the local-only models' rounds (the simulation's ``local``)
assert PERSONAL in METHODS


def check_personal(method: str) -> None:
    """ValueError naming the choices unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown --personal {method!r}; choose from {', '.join(METHODS)}")


def adaptation_seed(seed: int, round_: int, client: int = 0) -> int:
    """The fine-tuning seed of (run or node seed, round, client), independent of the rounds'
    training seeds (the simulation's ``seed_of`` with :data:`ADAPT_SALT`)."""
    return round_seed(seed, round_, client, ADAPT_SALT)


def local_seed(seed: int, round_: int, client: int = 0) -> int:
    """The seed of a local-only model's round (the simulation's ``seed_of`` with
    :data:`LOCAL_SALT`)."""
    return round_seed(seed, round_, client, LOCAL_SALT)


def round_seed(seed: int, round_: int, client: int, salt: int) -> int:
    """A seed for (run or node seed, round, client, purpose), independent across the four."""
    return int(np.random.SeedSequence([seed, round_, client, salt]).generate_state(1)[0])


CHOICES = ("group", "personal", "local")  # what a node may predict with; ties go to the first


def choose(
    group_val: Sequence[float] | np.ndarray,
    personal_val: Sequence[float | None] | np.ndarray | None = None,
    local_val: Sequence[float | None] | np.ndarray | None = None,
) -> np.ndarray:
    """Per node, the index in :data:`CHOICES` of the model it predicts with: the one that
    scores best on the node's own validation split among its plain group model, its personal
    model and its own local-only model (a missing one, None, never wins; ties go to the
    earlier in :data:`CHOICES`, so a model replaces the group's only when strictly better)."""
    group = np.asarray(group_val, np.float64)
    rows = [group] + [_scores(v, len(group)) for v in (personal_val, local_val)]
    picked: np.ndarray = np.argmax(np.stack(rows), axis=0)  # the first of equal maxima
    return picked


def _scores(values: Sequence[float | None] | np.ndarray | None, n: int) -> np.ndarray:
    """Validation scores with None (no such model) as -inf."""
    if values is None:
        return np.full(n, -np.inf)
    return np.array([-np.inf if v is None else v for v in values], np.float64)


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
