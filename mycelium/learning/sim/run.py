"""In-process simulation of learning groups: the same data, model and policy as the real node.

One process, no Flower processes, no HTTP. Every algorithm trains the same task's model
(``--task``, default the digits MLP) on the same client splits with the same hyper-parameters
and seeds, through the task's batched operations (one model at a time when it has none);
each group aggregates with its own instance of flwr's strategy (``--strategy``, default
FedAvg; :mod:`mycelium.learning.sim.groups`). ``mycelium``, ``first-k`` and ``naive``
call the real :func:`mycelium.learning.policy.decide` once per round on a simulated clock
(``ROUND_SECONDS`` per round), in a seeded random order, so group sizes and capacity are always
current. A :class:`~mycelium.learning.sim.timeline.Timeline` says who is present in which
round and whose data drifts when; every algorithm of a run meets the same one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TypedDict

import numpy as np

from mycelium.learning.sim import metrics as sim_metrics
from mycelium.learning.sim.federation import Federation, LocalModels, SimConfig, Trace, mean
from mycelium.learning.sim.groups import GroupTraining
from mycelium.learning.sim.personal import local_models, personal_accuracy, trained_local
from mycelium.learning.sim.policy import run_first_k, run_mycelium, run_naive
from mycelium.learning.tasks.base import Weights

__all__ = ["Federation", "GroupTraining", "SimConfig", "Weights", "simulate"]

logger = logging.getLogger(__name__)

ALGORITHMS = (
    "local", "global", "oracle", "ifca", "naive", "first-k", "mycelium",
    "global+ft", "oracle+ft", "ifca+ft",
)  # fmt: skip
GROUP_SUFFIX = "-group"  # the record of a personalising run's plain group models


@dataclass(frozen=True)
class RunResult:
    """Outcome of one algorithm on one federation (``purity`` None without latent clusters).

    ``moves_after_placement``: group changes of clients that already had a group;
    ``newcomers_settled``: share of late arrivals (drifted ones aside) that never moved after
    their first placement; ``drift_rehomed``: share of drifted clients in their new cluster's
    group after at most two decisions (None when the run has no newcomers / no drift);
    ``split_views``: data views whose clients end in more than one group;
    ``below_local_share``: share of the clients present at the end whose final accuracy is
    below their own accuracy under ``local`` (None when ``local`` did not run);
    ``below_local_se_share``: the same, below by more than the standard error of the
    client's ``local`` accuracy on its test split (:func:`local_noise`)."""

    algorithm: str
    accuracy: float
    accuracy_per_round: tuple[float, ...]
    migrations: int
    groups: int
    purity: float | None
    seconds_per_round: float
    rounds_to_90pct_oracle: int | None = None
    moves_after_placement: int = 0
    newcomers_settled: float | None = None
    drift_rehomed: float | None = None
    split_views: int = 0
    below_local_share: float | None = None
    below_local_se_share: float | None = None


# --- fixed-membership algorithms -------------------------------------------------------------


def run_local(fed: Federation) -> Trace:
    """Every client trains alone."""
    own = LocalModels(fed)
    curve, history = [], []
    final: dict[int, float] = {}
    for round_ in range(fed.config.rounds):
        models = own.train(round_)
        mine = {i: i for i in models}
        final = dict(zip(models, fed.test_accuracy(models, mine, round_), strict=True))
        curve.append(mean(list(final.values())))
        history.append(mine)
    return Trace(curve, history, 0, final)


def _scored(
    fed: Federation,
    models: Mapping[int, Weights],
    assignment: dict[int, int],
    round_: int,
    personal: bool,
    own: LocalModels | None,
) -> dict[int, float]:
    """Each assigned client's test accuracy with its group's model, or with what it uses
    when it ``personal``-ises (``own``: its local-only models to fall back on, if any;
    :mod:`mycelium.learning.sim.personal`)."""
    plain = dict(zip(assignment, fed.test_accuracy(models, assignment, round_), strict=True))
    if not personal:
        return plain
    grouped = {i: models[g] for i, g in assignment.items()}
    return personal_accuracy(fed, grouped, plain, round_, trained_local(own, round_))


def run_fixed_groups(
    fed: Federation, group_of: Callable[[int, int], int], personal: bool = False
) -> Trace:
    """The strategy within fixed groups: ``group_of(client, round)`` is client's group index;
    ``personal``: each client predicts with its personal model where it chose it."""
    init = fed.initial(fed.config.seed)
    training = GroupTraining(fed, salt=1)
    own = local_models(fed, personal)
    models: dict[int, Weights] = {}
    curve, history = [], []
    final: dict[int, float] = {}
    for round_ in range(fed.config.rounds):
        assignment = {i: group_of(i, round_) for i in fed.present(round_)}
        for g in assignment.values():
            models.setdefault(g, init)
        models = _group_round(training, models, assignment, round_)
        final = _scored(fed, models, assignment, round_, personal, own)
        curve.append(mean(list(final.values())))
        history.append(assignment)
    return Trace(curve, history, 0, final)


def _group_round(
    training: GroupTraining, models: dict[int, Weights], assignment: dict[int, int], round_: int
) -> dict[int, Weights]:
    """One round of every group of the present clients (``assignment``); a group nobody
    trained keeps its model."""
    members: dict[int, list[int]] = {}
    for i in sorted(assignment):
        members.setdefault(assignment[i], []).append(i)
    return {**models, **training.round(models, members, round_)}


def run_global(fed: Federation, personal: bool = False) -> Trace:
    """One FedAvg group of all clients."""
    return run_fixed_groups(fed, lambda _i, _r: 0, personal)


def run_oracle(fed: Federation, personal: bool = False) -> Trace:
    """FedAvg within the true clusters (one group when there are none), drift included."""

    def cluster(i: int, round_: int) -> int:
        label = fed.phase(round_).labels[i]
        return 0 if label is None else label

    return run_fixed_groups(fed, cluster, personal)


def run_ifca(fed: Federation, personal: bool = False) -> Trace:
    """IFCA (Ghosh et al. 2020): K models; each client trains the one with its lowest loss."""
    k = fed.config.clusters
    models = {j: fed.initial(fed.config.seed + j) for j in range(k)}
    training = GroupTraining(fed, salt=1)
    own = local_models(fed, personal)
    last: dict[int, int] = {}
    migrations = 0
    curve, history = [], []
    final: dict[int, float] = {}
    for round_ in range(fed.config.rounds):
        who = fed.present(round_)
        clients = fed.phase(round_).clients
        loss, _ = fed.ops.evaluate_matrix(
            [models[j] for j in range(k)],
            [clients[i].x_train for i in who],
            [clients[i].y_train for i in who],
        )
        choice = {i: int(j) for i, j in zip(who, loss.argmin(axis=0), strict=True)}
        migrations += sum(last[i] != j for i, j in choice.items() if i in last)
        last.update(choice)
        models = _group_round(training, models, choice, round_)
        final = _scored(fed, models, choice, round_, personal, own)
        curve.append(mean(list(final.values())))
        history.append(choice)
    return Trace(curve, history, migrations, final)


RUNNERS: dict[str, Callable[[Federation], Trace]] = {
    "local": run_local,
    "global": run_global,
    "oracle": run_oracle,
    "ifca": run_ifca,
    "naive": run_naive,
    "first-k": run_first_k,
    "mycelium": run_mycelium,
    "global+ft": lambda fed: run_global(fed, personal=True),
    "oracle+ft": lambda fed: run_oracle(fed, personal=True),
    "ifca+ft": lambda fed: run_ifca(fed, personal=True),
}


# --- metrics, driver, output ----------------------------------------------------------------


def purity(assignment: Sequence[int], labels: Sequence[int | None]) -> float | None:
    """Share of clients that belong to their group's majority cluster (None without clusters)."""
    known = [label for label in labels if label is not None]
    if len(known) < len(labels):
        return None
    majority = 0
    for g in set(assignment):
        counts = np.bincount([known[i] for i, a in enumerate(assignment) if a == g])
        majority += int(counts.max())
    return majority / len(assignment)


def run_algorithm(fed: Federation, algorithm: str) -> RunResult:
    """Run one algorithm on ``fed`` and measure it (see :func:`run_traced`)."""
    return _measure(fed, algorithm, *_timed(fed, algorithm))


def _timed(fed: Federation, algorithm: str) -> tuple[Trace, float]:
    started = time.perf_counter()
    trace = RUNNERS[algorithm](fed)
    elapsed = time.perf_counter() - started
    logger.info("%s %s: %.3f in %.1f s", fed.config.scenario, algorithm, trace.curve[-1], elapsed)
    return trace, elapsed


def run_traced(fed: Federation, algorithm: str) -> list[tuple[RunResult, dict[int, float]]]:
    """One algorithm on ``fed``, measured (group figures over the clients present at the end;
    unplaced clients count as their own group), with each present client's final accuracy;
    a personalising policy run adds its plain group models' record (``GROUP_SUFFIX``)."""
    trace, elapsed = _timed(fed, algorithm)
    results = [(_measure(fed, algorithm, trace, elapsed), trace.final)]
    if trace.group_curve is not None and trace.group_final is not None:
        plain = dataclasses.replace(trace, curve=trace.group_curve, final=trace.group_final)
        results.append((_measure(fed, algorithm + GROUP_SUFFIX, plain, elapsed), plain.final))
    return results


def _measure(fed: Federation, algorithm: str, trace: Trace, elapsed: float) -> RunResult:
    last = fed.config.rounds - 1
    final, views = trace.history[-1], fed.phase(last).views
    who = fed.present(last)
    assignment = [final.get(i, -1 - i) for i in who]
    return RunResult(
        algorithm=algorithm,
        accuracy=round(trace.curve[-1], 4),
        accuracy_per_round=tuple(round(a, 4) for a in trace.curve),
        migrations=trace.migrations,
        groups=len(set(assignment)),
        purity=_round(purity(assignment, [views[i] for i in who])),
        seconds_per_round=elapsed / fed.config.rounds,
        **_living_figures(fed, trace),
    )


def below_local_share(
    final: Mapping[int, float],
    local: Mapping[int, float],
    noise: Mapping[int, float] | None = None,
) -> float:
    """Share of the clients of ``final`` whose accuracy is strictly below their ``local``
    one, by more than their ``noise`` when given (clients ``local`` lacks do not count; 0.0
    when none is left)."""
    shared = [i for i in final if i in local]
    if not shared:
        return 0.0
    margin = noise or {}
    return sum(final[i] < local[i] - margin.get(i, 0.0) for i in shared) / len(shared)


def local_noise(fed: Federation, local: Mapping[int, float]) -> dict[int, float]:
    """Per client of ``local``: the standard error of its ``local`` accuracy on its own test
    split in the last round, whose effective size counts repeated images once per their
    weight (:func:`~mycelium.learning.sim.metrics.effective_size`: a label-skewed client's
    split repeats the pool's few images of its frequent labels)."""
    clients = fed.phase(fed.config.rounds - 1).clients
    return {
        i: sim_metrics.standard_error(a, sim_metrics.effective_size(clients[i].x_test))
        for i, a in local.items()
    }


class _LivingFigures(TypedDict, total=False):
    moves_after_placement: int
    newcomers_settled: float | None
    split_views: int
    drift_rehomed: float | None


def _living_figures(fed: Federation, trace: Trace) -> _LivingFigures:
    """Moves after placement, settled newcomers, re-homed drifted nodes, split views."""
    timeline, history = fed.timeline, trace.history
    final_views = fed.phase(fed.config.rounds - 1).views
    drifted = {i for i, _ in timeline.drifted}  # their data changed: they ought to move
    newcomers = [i for i in timeline.newcomers() if i not in drifted]
    figures: _LivingFigures = {
        "moves_after_placement": sim_metrics.moves_after_placement(history),
        "newcomers_settled": _round(sim_metrics.newcomers_settled(history, newcomers)),
        "split_views": sim_metrics.split_views(history[-1], final_views),
    }
    if timeline.drift_round is not None:
        views = fed.phase(timeline.drift_round).views
        share = sim_metrics.drift_rehomed(history, sorted(drifted), views, timeline.drift_round)
        figures["drift_rehomed"] = _round(share)
    return figures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def rounds_to_reach(curve: Sequence[float], target: float) -> int | None:
    """First round (1-based) whose accuracy reaches ``target``."""
    return next((r + 1 for r, a in enumerate(curve) if a >= target), None)


def simulate(config: SimConfig, algorithms: Sequence[str]) -> list[RunResult]:
    """All ``algorithms`` on one federation; oracle's final accuracy sets the 90% mark."""
    return run_all(Federation(config), algorithms)


def run_all(fed: Federation, algorithms: Sequence[str]) -> list[RunResult]:
    """:func:`simulate` on a federation already built (its timeline is the caller's too)."""
    traced = [pair for a in algorithms for pair in run_traced(fed, a)]
    local = next((final for r, final in traced if r.algorithm == "local"), None)
    results = [r for r, _ in traced]
    if local is not None:
        noise = local_noise(fed, local)
        results = [
            dataclasses.replace(
                r,
                below_local_share=_round(below_local_share(final, local)),
                below_local_se_share=_round(below_local_share(final, local, noise)),
            )
            for r, final in traced
        ]
    oracle = next((r for r in results if r.algorithm == "oracle"), None)
    if oracle is None:
        return results
    target = 0.9 * oracle.accuracy
    return [_with_rounds(r, rounds_to_reach(r.accuracy_per_round, target)) for r in results]


def _with_rounds(result: RunResult, rounds: int | None) -> RunResult:
    values = asdict(result)
    values["rounds_to_90pct_oracle"] = rounds
    values["accuracy_per_round"] = result.accuracy_per_round
    return RunResult(**values)
