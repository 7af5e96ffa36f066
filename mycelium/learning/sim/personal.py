"""Personal models in the simulation: what a node predicts with, beside the group model it
trains for (the rules are :mod:`mycelium.learning.personal`'s, shared with the node agent).

After each round a node in a group may keep a *personal* model, the group model adapted to its
own data, beside its own *local-only* model (trained every round on its own data, as the
``local`` algorithm trains it: :class:`~mycelium.learning.sim.federation.LocalModels`), and
predicts with whichever of the plain group model, the personal model and the local model
scores best on the node's own validation split (:func:`mycelium.learning.personal.choose`:
ties go to the group model, then the personal one). The adaptation is the run's
``personal`` (``--personal``):

* ``ens``: the ``ft`` model, with the node predicting through the ensemble of its group,
  fine-tuned and local-only models that :func:`mycelium.learning.personal.choose_ensemble`
  picks on its validation split (:func:`ensemble_accuracy`);
* ``ft``: the group model fine-tuned on the node's training split with the task's adaptation
  budget (:func:`~mycelium.learning.tasks.base.adaptation_hyper`: one epoch of its own
  ``train`` unless the task sets ``adapt_hyper``), seeded per (round, client) alike for every
  algorithm;
* ``prior``: the group model with the node's label log-prior added to its logits (the
  label-prior correction the probes already use; no training);
* ``none``: the plain group model (no personal model, no fall-back on the local one).

The personal model is never sent anywhere: groups keep aggregating their members' plain
updates (members train from the group model, not from their personal one) and the placement
policy keeps probing the plain group models, so personalisation changes neither what a group
learns nor where a node goes (both tested). It only changes the accuracy a node gets.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mycelium.learning.personal import (
    CHOICES,
    check_personal,
    choose,
    choose_ensemble,
    ensemble_members,
    hits,
    mixture,
)
from mycelium.learning.sim.federation import Federation, LocalModels
from mycelium.learning.tasks.base import Weights
from mycelium.learning.tasks.ops import log_prior_of

__all__ = ["check_personal", "local_models", "personal_accuracy", "trained_local"]

PERSONAL, LOCAL = CHOICES.index("personal"), CHOICES.index("local")


def local_models(fed: Federation, personal: bool) -> LocalModels | None:
    """The local-only models a ``personal``-ising run keeps for its nodes to fall back on
    (None when the run does not personalise, its ``--personal`` is ``none`` or it runs
    ``--no-local-fallback``)."""
    config = fed.config
    wanted = personal and config.personal != "none" and config.local_fallback
    return LocalModels(fed) if wanted else None


def trained_local(own: LocalModels | None, round_: int) -> dict[int, Weights]:
    """``own``'s models trained for ``round_`` (none without ``own``)."""
    return {} if own is None else own.train(round_)


def personal_accuracy(
    fed: Federation,
    models: Mapping[int, Weights],
    plain: Mapping[int, float],
    round_: int,
    local: Mapping[int, Weights],
) -> dict[int, float]:
    """Test accuracy of what each client ``i`` of ``models`` uses in ``round_``: the best on
    its validation split of its group's model ``models[i]`` (whose test accuracy ``plain[i]``
    the caller measured), its personal model from it and its local-only model ``local[i]``
    (a client ``local`` lacks has none)."""
    who = sorted(models)
    method = fed.config.personal
    check_personal(method)
    if method == "none" or not who:
        return {i: plain[i] for i in who}
    group = [models[i] for i in who]
    if method == "ens":
        return ensemble_accuracy(fed, who, group, plain, (round_, local))
    personal, priors = _personal_models(fed, group, who, round_, method)
    own_val = None
    if personal is not None:
        own_val = fed.own_accuracy(personal, who, round_, split="val", log_priors=priors)
    picked = choose(
        fed.own_accuracy(group, who, round_, split="val"),
        own_val,
        _local_val(fed, local, who, round_),
    )
    used = {i: plain[i] for i in who}
    rows = np.flatnonzero(picked == PERSONAL).tolist()
    if personal is not None and rows:
        shift = None if priors is None else [priors[b] for b in rows]
        chosen = [personal[b] for b in rows]
        acc = fed.own_accuracy(chosen, [who[b] for b in rows], round_, log_priors=shift)
        used.update(zip([who[b] for b in rows], acc.tolist(), strict=True))
    fallen = [who[b] for b in np.flatnonzero(picked == LOCAL).tolist()]
    if fallen:  # scored as the ``local`` algorithm scores them: the same figures
        acc_local = fed.test_accuracy(local, {i: i for i in fallen}, round_)
        used.update(zip(fallen, acc_local, strict=True))
    return used


def ensemble_accuracy(
    fed: Federation,
    who: list[int],
    group: list[Weights],
    plain: Mapping[int, float],
    when: tuple[int, Mapping[int, Weights]],
) -> dict[int, float]:
    """``ens``: test accuracy of the ensemble each client ``who[b]`` predicts with in round
    ``when[0]`` (:func:`~mycelium.learning.personal.choose_ensemble` on its val split) over
    its group's model ``group[b]`` (test accuracy ``plain[who[b]]``), that model fine-tuned,
    and its local-only model ``when[1][who[b]]`` when it has one."""
    round_, local = when
    tuned = fed.adapt(group, who, round_)
    clients = fed.phase(round_).clients
    used = {}
    for i, mine in zip(who, zip(group, tuned, strict=True), strict=True):
        models = [*mine, local[i]] if i in local else list(mine)
        val = fed.log_probs(models, [i] * len(models), round_, "val")
        picked = choose_ensemble(
            ensemble_members(val[0], val[1], val[2] if len(val) > 2 else None), clients[i].y_val
        )
        if picked == 0:  # the group model alone: its test accuracy is measured already
            used[i] = plain[i]
            continue
        kept = models[: picked + 1]  # only the chosen members are scored on the test split
        test = mixture(fed.log_probs(kept, [i] * len(kept), round_, "test"))
        used[i] = hits(test, clients[i].y_test)
    return used


def _local_val(
    fed: Federation, local: Mapping[int, Weights], who: list[int], round_: int
) -> list[float | None]:
    """Each client's local-only model's accuracy on its val split (None without one)."""
    have = [i for i in who if i in local]
    if not have:
        return [None] * len(who)
    scores = fed.local_scores([local[i] for i in have], have, round_).tolist()
    found: dict[int, float] = dict(zip(have, scores, strict=True))
    return [found.get(i) for i in who]


def _personal_models(
    fed: Federation, group: list[Weights], who: list[int], round_: int, method: str
) -> tuple[list[Weights] | None, list[np.ndarray] | None]:
    """The ``method`` personal models of clients ``who`` from their group models, with the
    log-priors added to their logits (``prior``); (None, None) when the task has no prior."""
    if method in ("ft", "ens"):
        return fed.adapt(group, who, round_), None
    clients = fed.phase(round_).clients
    found = [log_prior_of(fed.task, clients[i].y_train) for i in who]
    if any(p is None for p in found):  # the task has no prior-shifted scores
        return None, None
    return group, [p for p in found if p is not None]
