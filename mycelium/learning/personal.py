"""Personal models, one implementation for the simulation and the node agent (issue 26).

Beside the model of its group, a grouped node keeps a *personal* model, the group model
adapted to its own data, and its own *local-only* model, and predicts with whichever of the
three scores best on its own validation split (:func:`choose`: ties keep the group model,
then the personal one). The adaptation is ``personal`` (the bench's and the node's
``--personal``):

* ``ens`` (default): the ``ft`` model below, but the node predicts with an *ensemble*: the
  mean of the class probabilities of its group model, its fine-tuned copy and its own
  local-only model (:data:`ENSEMBLES`), members added in that order while they lower the
  loss on the node's validation split (:func:`choose_ensemble`: greedy ensemble selection
  from the group model; the loss, not the accuracy, since a split of a few dozen images
  ties on accuracy and picks its winner by noise);
* ``ft``: the group model fine-tuned on the node's training split with the task's
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

METHODS = ("ens", "ft", "prior", "none")
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


ENSEMBLES = ("group", "group+personal", "group+personal+local")  # an ``ens`` node's choices


def mixture(members: Sequence[np.ndarray]) -> np.ndarray:
    """Log of the mean of the members' class probabilities; each member is log class
    probabilities ``(n, classes)`` (:func:`~mycelium.learning.tasks.base.log_probs`)."""
    stacked = np.stack([np.asarray(m, np.float64) for m in members])
    top = stacked.max(axis=0)
    result: np.ndarray = top + np.log(np.exp(stacked - top).mean(axis=0))
    return result


def nll(log_probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``log_probs`` ``(n, classes)``."""
    return float(-np.asarray(log_probs)[np.arange(len(y)), np.asarray(y, np.int64)].mean())


def hits(log_probs: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the argmax of ``log_probs`` ``(n, classes)`` on labels ``y``."""
    return float((np.asarray(log_probs).argmax(axis=1) == np.asarray(y)).mean())


def ensemble_members(
    group: np.ndarray, personal: np.ndarray, local: np.ndarray | None
) -> list[np.ndarray]:
    """The log class probabilities of each of :data:`ENSEMBLES` on one split, from those of
    the group model, the personal (fine-tuned) one and the local-only one (the last ensemble
    left out without a local model)."""
    found = [group, mixture([group, personal])]
    return found if local is None else [*found, mixture([group, personal, local])]


def choose_ensemble(members: Sequence[np.ndarray], y_val: np.ndarray) -> int:
    """The index in :data:`ENSEMBLES` of the ensemble a node predicts with: the lowest loss
    on its validation labels ``y_val`` among ``members`` (:func:`ensemble_members` on that
    split); ties go to the smaller ensemble, so a member joins only when it helps."""
    losses = [nll(m, y_val) for m in members]
    return int(np.argmin(losses))  # the first of equal minima


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
