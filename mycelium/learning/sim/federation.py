"""The world of one simulated run: its flags, the clients' data per phase, and the timeline.

:class:`Federation` is what every algorithm of a run shares (``mycelium.learning.sim``): the client
splits before and after the drift, who is present in which round
(:class:`~mycelium.learning.sim.timeline.Timeline`), batched training with per-(round, client) seeds
and per-cluster test accuracy. Data, model and arithmetic are the run's task (``--task``,
default the digits MLP), through its batched operations (one model at a time when it has
none). :func:`fedavg` is Flower's own FedAvg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from mycelium.config import MAX_CANDIDATES, PERSONAL, SEARCH_EVALUATIONS
from mycelium.learning import data as data_mod
from mycelium.learning.personal import ADAPT_SALT, LOCAL_SALT, round_seed
from mycelium.learning.policy import PolicyConfig
from mycelium.learning.sim.timeline import Drift, Timeline, make_timeline
from mycelium.learning.strategy import StrategyConfig
from mycelium.learning.tasks.base import (
    DataRequest,
    Hyper,
    Weights,
    adaptation_hyper,
    get_weights,
    log_probs,
    set_weights,
)
from mycelium.learning.tasks.loader import load_task
from mycelium.learning.tasks.ops import batched, log_prior_of

ROUND_SECONDS = 30.0


def _sim_policy() -> PolicyConfig:
    """The policy's defaults, with the agent's search: ``SEARCH_EVALUATIONS`` rounds."""
    return PolicyConfig(search_s=SEARCH_EVALUATIONS * ROUND_SECONDS)


@dataclass(frozen=True)
class SimConfig:
    """One simulated federation (``max_candidates``: groups a node probes besides its own;
    ``task``: a task reference, see docs/tasks.md; ``strategy``: every group's aggregation;
    ``prior_shift``: nodes score models prior-shifted by their own labels, as the agent does
    when the task has the hook)."""

    scenario: str
    clusters: int
    clients: int
    rounds: int
    seed: int
    max_capacity: int
    policy: PolicyConfig = field(default_factory=_sim_policy)
    arrivals: bool = False
    drift: Drift | None = None
    liars: int = 0
    max_candidates: int = MAX_CANDIDATES
    task: str = "digits"
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    prior_shift: bool = True
    label_skew: float | None = None
    personal: str = PERSONAL
    local_fallback: bool = True  # a personalising node may predict with its local-only model


@dataclass
class Trace:
    """What an algorithm run produced: mean accuracy of the present clients per round, the
    group of every present client after each round, the decisions that migrated, and each
    present client's accuracy in the last round. A personalising run also gives the plain
    group models' figures (``group_curve``, ``group_final``)."""

    curve: list[float]
    history: list[dict[int, int]]
    migrations: int
    final: dict[int, float] = field(default_factory=dict)
    group_curve: list[float] | None = None
    group_final: dict[int, float] | None = None


@dataclass(frozen=True)
class Phase:
    """The clients' data in one stretch of rounds (before or after the drift), with each
    client's label log-prior when the run scores prior-shifted."""

    clients: list[data_mod.ClientData]
    rotate: bool
    log_priors: tuple[np.ndarray, ...] | None = None  # per client, for prior-shifted probes

    @property
    def labels(self) -> list[int | None]:
        return [c.cluster for c in self.clients]

    @property
    def views(self) -> list[int | None]:
        """Distinct data views: for rotate, clusters c and c + 4 see identical data."""
        return [c % 4 if self.rotate and c is not None else c for c in self.labels]


class Federation:
    """Client splits per phase, the timeline, and per-cluster test sets (shared by cluster)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.task = load_task(config.task)
        self.ops = batched(self.task)
        self._scratch = self.task.create_model(config.seed)  # for log_probs, reloaded per call
        rotate = config.scenario == "rotate"
        base = [self._client(i) for i in range(config.clients)]
        self.timeline: Timeline = make_timeline(
            clients=config.clients,
            rounds=config.rounds,
            seed=config.seed,
            views=Phase(base, rotate).views,
            arrivals=config.arrivals,
            drift=config.drift,
            liars=config.liars,
        )
        moved = {i: self._client(i, cluster) for i, cluster in self.timeline.drifted}
        self.phases = [self._phase(base, rotate)]
        if moved:
            self.phases.append(self._phase([moved.get(i, c) for i, c in enumerate(base)], rotate))

    def _phase(self, clients: list[data_mod.ClientData], rotate: bool) -> Phase:
        """A phase with its clients' label log-priors, computed once (None when the run or
        the task has no prior-shifted scores)."""
        if not self.config.prior_shift:
            return Phase(clients, rotate)
        priors = [log_prior_of(self.task, c.y_train) for c in clients]
        shifted = tuple(p for p in priors if p is not None)
        return Phase(clients, rotate, shifted if len(shifted) == len(priors) else None)

    def _client(self, index: int, cluster: int | None = None) -> data_mod.ClientData:
        """Client ``index``'s splits from the task (of ``cluster`` instead of its own)."""
        config = self.config
        request = DataRequest(
            scenario=config.scenario,
            clusters=config.clusters,
            index=index,
            num_clients=config.clients,
            seed=config.seed,
            cluster=cluster,
            label_skew=config.label_skew,
        )
        return self.task.load_data(request)

    def initial(self, seed: int) -> Weights:
        """The task's fresh model for ``seed`` as arrays."""
        return get_weights(self.task.create_model(seed))

    def phase(self, round_: int) -> Phase:
        drift = self.timeline.drift_round
        return self.phases[-1] if drift is not None and round_ >= drift else self.phases[0]

    def present(self, round_: int) -> list[int]:
        return self.timeline.present(round_)

    def train(
        self,
        starts: Sequence[Weights],
        who: Sequence[int],
        round_: int,
        salt: int,
        proximal_mu: float = 0.0,
    ) -> list[Weights]:
        """Train client ``who[b]`` from ``starts[b]`` for one round with the task's
        hyper-parameters (plus FedProx's ``proximal_mu``); returns new weights."""
        hyper = replace(self.task.hyper, proximal_mu=proximal_mu)
        return self._train_with(hyper, starts, who, round_, salt)

    def _train_with(
        self, hyper: Hyper, starts: Sequence[Weights], who: Sequence[int], round_: int, salt: int
    ) -> list[Weights]:
        clients = self.phase(round_).clients
        seeds = [seed_of(self.config.seed, round_, i, salt) for i in who]
        xs, ys = [clients[i].x_train for i in who], [clients[i].y_train for i in who]
        return self.ops.train_many(starts, xs, ys, hyper, seeds=seeds)[0]

    def sizes(self, round_: int, who: Sequence[int]) -> dict[int, int]:
        """Training examples of each client in ``who`` (FedAvg's weights) in ``round_``."""
        clients = self.phase(round_).clients
        return {i: len(clients[i].y_train) for i in who}

    def val(self, round_: int, who: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        clients = self.phase(round_).clients
        return [clients[i].x_val for i in who], [clients[i].y_val for i in who]

    def log_priors(self, round_: int, who: Sequence[int]) -> list[np.ndarray] | None:
        """Each client's label log-prior (from its training labels in ``round_``) for the
        prior-shifted scores, or None when the run or the task has none."""
        priors = self.phase(round_).log_priors
        return None if priors is None else [priors[i] for i in who]

    def local_scores(
        self, models: Sequence[Weights], who: Sequence[int], round_: int
    ) -> np.ndarray:
        """Local model b's plain accuracy on client ``who[b]``'s validation split (trained on
        the client's own labels, it has their prior already)."""
        return self.ops.evaluate_pairs(models, *self.val(round_, who))[1]

    def score_matrix(self, models: Sequence[Weights], round_: int) -> np.ndarray:
        """Every group model's score on every client's validation split, ``(models,
        clients)``, prior-shifted by each client's labels if the run is: the probes."""
        who = range(self.config.clients)
        xs, ys = self.val(round_, who)
        priors = self.log_priors(round_, who)
        return self.ops.evaluate_matrix(models, xs, ys, log_priors=priors)[1]

    def test_accuracy(
        self,
        models: Sequence[Weights] | Mapping[int, Weights],
        model_of: dict[int, int],
        round_: int,
    ) -> list[float]:
        """Accuracy of client i (each key, in key order) with ``models[model_of[i]]`` on its
        own test split (``models`` a list, or a dict by group id). Clients sharing one test
        split (a cluster's whole pool) are evaluated together."""
        clients = self.phase(round_).clients
        shared: dict[int, list[int]] = {}
        for i in model_of:
            shared.setdefault(id(clients[i].x_test), []).append(i)
        result: dict[int, float] = {}
        alone = [m[0] for m in shared.values() if len(m) == 1]
        if alone:
            acc = self.own_accuracy([models[model_of[i]] for i in alone], alone, round_)
            result.update(zip(alone, acc.tolist(), strict=True))
        for members in (m for m in shared.values() if len(m) > 1):
            used = sorted({model_of[i] for i in members})
            first = clients[members[0]]
            _, acc = self.ops.evaluate_matrix(
                [models[m] for m in used], [first.x_test], [first.y_test]
            )
            row = dict(zip(used, acc[:, 0], strict=True))
            result.update({i: float(row[model_of[i]]) for i in members})
        return [result[i] for i in model_of]

    def own_accuracy(
        self,
        models: Sequence[Weights],
        who: Sequence[int],
        round_: int,
        *,
        split: str = "test",
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Accuracy of ``models[b]`` on client ``who[b]``'s own ``split`` ("test" or "val"),
        with ``log_priors[b]`` added to its logits when given."""
        clients = self.phase(round_).clients
        xs = [getattr(clients[i], f"x_{split}") for i in who]
        ys = [getattr(clients[i], f"y_{split}") for i in who]
        return self.ops.evaluate_pairs(models, xs, ys, log_priors=log_priors)[1]

    def log_probs(
        self, models: Sequence[Weights], who: Sequence[int], round_: int, split: str
    ) -> list[np.ndarray]:
        """Log class probabilities of ``models[b]`` on client ``who[b]``'s own ``split``
        ("val" or "test"), through the task's :func:`~mycelium.learning.tasks.base.log_probs`
        (its hook, or ``log_softmax`` of the module) one model at a time."""
        clients = self.phase(round_).clients
        found = []
        for weights, i in zip(models, who, strict=True):
            set_weights(self._scratch, weights)
            found.append(log_probs(self.task, self._scratch, getattr(clients[i], f"x_{split}")))
        return found

    def adapt(self, models: Sequence[Weights], who: Sequence[int], round_: int) -> list[Weights]:
        """``models[b]`` fine-tuned on client ``who[b]``'s training split with the task's
        adaptation budget (:func:`~mycelium.learning.tasks.base.adaptation_hyper`), seeded
        per (round, client) the same way for every algorithm."""
        return self._train_with(adaptation_hyper(self.task), models, who, round_, ADAPT_SALT)


class LocalModels:
    """Each present client's local-only model, trained one round at a time from the run's
    fresh model on the client's own training split: the ``local`` algorithm's models (same
    starts and seeds, so the same weights), also what a personalising node falls back on."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.models: dict[int, Weights] = {}
        self._start = fed.initial(fed.config.seed)

    def train(self, round_: int) -> dict[int, Weights]:
        """Train every client present in ``round_`` for one round; their models by client."""
        who = self.fed.present(round_)
        starts = [self.models.get(i, self._start) for i in who]
        trained = self.fed.train(starts, who, round_, salt=LOCAL_SALT)
        self.models.update(zip(who, trained, strict=True))
        return {i: self.models[i] for i in who}


def seed_of(seed: int, round_: int, client: int, salt: int) -> int:
    """A seed for (run seed, round, client, purpose), independent across the four (the
    node agent's too: :func:`mycelium.learning.personal.round_seed`)."""
    return round_seed(seed, round_, client, salt)


def fedavg(results: list[tuple[Weights, int]]) -> Weights:
    """Flower's FedAvg (weighted by examples), imported lazily: only the sim needs flwr."""
    from flwr.server.strategy.aggregate import aggregate

    return [np.asarray(a, dtype=np.float32) for a in aggregate(results)]


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values))
