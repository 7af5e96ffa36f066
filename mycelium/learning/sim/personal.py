"""Personal models in the simulation: what a node predicts with, beside the group model it
trains for (the rules are :mod:`mycelium.learning.personal`'s, shared with the node agent).

After each round a node in a group may keep a *personal* model, the group model adapted to its
own data, and predicts with it when it scores better than the plain group model on the node's
own validation split (ties keep the group model). The adaptation is the run's ``personal``
(``--personal``):

* ``ft``: the group model fine-tuned on the node's training split with the task's adaptation
  budget (:func:`~mycelium.learning.tasks.base.adaptation_hyper`: one epoch of its own
  ``train`` unless the task sets ``adapt_hyper``), seeded per (round, client) alike for every
  algorithm;
* ``prior``: the group model with the node's label log-prior added to its logits (the
  label-prior correction the probes already use; no training);
* ``none``: the plain group model.

The personal model is never sent anywhere: groups keep aggregating their members' plain
updates (members train from the group model, not from their personal one) and the placement
policy keeps probing the plain group models, so personalisation changes neither what a group
learns nor where a node goes (both tested). It only changes the accuracy a node gets.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mycelium.learning.personal import check_personal, prefers
from mycelium.learning.sim.federation import Federation
from mycelium.learning.tasks.base import Weights
from mycelium.learning.tasks.ops import log_prior_of

__all__ = ["check_personal", "personal_accuracy"]


def personal_accuracy(
    fed: Federation,
    models: Mapping[int, Weights],
    plain: Mapping[int, float],
    round_: int,
) -> dict[int, float]:
    """Test accuracy of what each client ``i`` of ``models`` uses in ``round_``: its personal
    model from ``models[i]`` (its group's) when that scores better on its validation split,
    else the group model (whose test accuracy ``plain[i]`` the caller measured)."""
    who = sorted(models)
    method = fed.config.personal
    check_personal(method)
    if method == "none" or not who:
        return {i: plain[i] for i in who}
    group = [models[i] for i in who]
    clients = fed.phase(round_).clients
    priors: list[np.ndarray] | None = None
    if method == "ft":
        personal = fed.adapt(group, who, round_)
    else:
        found = [log_prior_of(fed.task, clients[i].y_train) for i in who]
        if any(p is None for p in found):  # the task has no prior-shifted scores
            return {i: plain[i] for i in who}
        personal, priors = group, [p for p in found if p is not None]
    own_val = fed.own_accuracy(personal, who, round_, split="val", log_priors=priors)
    group_val = fed.own_accuracy(group, who, round_, split="val")
    better = [i for i, b in zip(who, prefers(own_val, group_val), strict=True) if b]
    used = {i: plain[i] for i in who}
    if better:
        index = {i: b for b, i in enumerate(who)}
        chosen = [personal[index[i]] for i in better]
        chosen_priors = None if priors is None else [priors[index[i]] for i in better]
        acc = fed.own_accuracy(chosen, better, round_, log_priors=chosen_priors)
        used.update(zip(better, acc.tolist(), strict=True))
    return used
