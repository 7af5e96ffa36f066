"""In-process simulation of learning groups: the same task, data and policy as the real node.

One process, no Flower processes, no HTTP. Every algorithm trains the same task's model
(``--task``, default the digits MLP) on the same client splits with the same hyper-parameters
and seeds, through the task's batched operations (one model at a time when it has none);
each group aggregates with its own instance of flwr's strategy (``--strategy``, default
FedAvg; :mod:`mycelium.learning.sim_groups`). ``mycelium`` and ``naive`` call the real
:func:`mycelium.learning.policy.decide` once per round on a simulated clock (``ROUND_SECONDS`` per
round), in a seeded random order, so group sizes and capacity are always current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from mycelium.learning.policy import Candidate, NodeState, PolicyConfig, decide, record_move
from mycelium.learning.sim_groups import GroupTraining
from mycelium.learning.strategy import StrategyConfig
from mycelium.learning.tasks.base import DataRequest, Weights, get_weights
from mycelium.learning.tasks.loader import load_task
from mycelium.learning.tasks.ops import batched

logger = logging.getLogger(__name__)

ALGORITHMS = ("local", "global", "oracle", "ifca", "naive", "mycelium")
ROUND_SECONDS = 30.0
DEFAULT_ROUNDS = 30  # bench rounds of a task without its own ``bench_rounds``
SIM_POLICY = PolicyConfig()


@dataclass(frozen=True)
class SimConfig:
    """One simulated federation."""

    scenario: str
    clusters: int
    clients: int
    rounds: int
    seed: int
    max_capacity: int
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    task: str = "digits"
    strategy: StrategyConfig = field(default_factory=StrategyConfig)


@dataclass(frozen=True)
class RunResult:
    """Outcome of one algorithm on one federation (``purity`` None without latent clusters)."""

    algorithm: str
    accuracy: float
    accuracy_per_round: tuple[float, ...]
    migrations: int
    groups: int
    purity: float | None
    seconds_per_round: float
    rounds_to_90pct_oracle: int | None = None


@dataclass
class _Trace:
    """What an algorithm run produced, before timing and oracle comparison."""

    curve: list[float]
    assignment: list[int]
    migrations: int


class Federation:
    """Client splits as stacked lists, plus per-cluster test sets (shared by cluster)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.task = load_task(config.task)
        self.ops = batched(self.task)
        self.clients = [
            self.task.load_data(
                DataRequest(
                    scenario=config.scenario,
                    clusters=config.clusters,
                    index=i,
                    num_clients=config.clients,
                    seed=config.seed,
                )
            )
            for i in range(config.clients)
        ]
        self.x_train = [c.x_train for c in self.clients]
        self.y_train = [c.y_train for c in self.clients]
        self.x_val = [c.x_val for c in self.clients]
        self.y_val = [c.y_val for c in self.clients]
        self.labels = [c.cluster for c in self.clients]
        # rotate has 4 distinct views: clusters c and c + 4 see identical data
        rotate = config.scenario == "rotate"
        self.views = [c % 4 if rotate and c is not None else c for c in self.labels]

    def initial(self, seed: int) -> Weights:
        """The task's fresh model for ``seed`` as arrays."""
        return get_weights(self.task.create_model(seed))

    def train(
        self,
        starts: Sequence[Weights],
        who: Sequence[int],
        round_: int,
        salt: int,
        proximal_mu: float = 0.0,
    ) -> list[Weights]:
        """Train client ``who[b]`` from ``starts[b]`` for one round; returns new weights."""
        seeds = [_seed(self.config.seed, round_, i, salt) for i in who]
        hyper = replace(self.task.hyper, proximal_mu=proximal_mu)
        trained, _ = self.ops.train_many(
            starts,
            [self.x_train[i] for i in who],
            [self.y_train[i] for i in who],
            hyper,
            seeds=seeds,
        )
        return trained

    def test_accuracy(self, models: Sequence[Weights], model_of: Sequence[int]) -> list[float]:
        """Client i's accuracy with ``models[model_of[i]]`` on its cluster's test data."""
        result = [0.0] * len(model_of)
        for label in sorted(set(self.labels), key=lambda v: -1 if v is None else v):
            members = [i for i, c in enumerate(self.labels) if c == label]
            used = sorted({model_of[i] for i in members})
            first = self.clients[members[0]]
            _, acc = self.ops.evaluate_matrix(
                [models[m] for m in used], [first.x_test], [first.y_test]
            )
            row = dict(zip(used, acc[:, 0], strict=True))
            for i in members:
                result[i] = float(row[model_of[i]])
        return result


def _seed(seed: int, round_: int, client: int, salt: int) -> int:
    return int(np.random.SeedSequence([seed, round_, client, salt]).generate_state(1)[0])


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


# --- fixed-membership algorithms -------------------------------------------------------------


def run_local(fed: Federation) -> _Trace:
    """Every client trains alone."""
    n = fed.config.clients
    models = [fed.initial(fed.config.seed)] * n
    curve = []
    for round_ in range(fed.config.rounds):
        models = fed.train(models, range(n), round_, salt=0)
        curve.append(_mean(fed.test_accuracy(models, range(n))))
    return _Trace(curve, list(range(n)), 0)


def run_fixed_groups(fed: Federation, assignment: list[int]) -> _Trace:
    """FedAvg within fixed groups (``assignment[i]`` = client i's group index)."""
    init = fed.initial(fed.config.seed)
    models = [init] * (max(assignment) + 1)
    training = GroupTraining(fed, salt=1)
    curve = []
    for round_ in range(fed.config.rounds):
        models = _group_round(training, models, assignment, round_)
        curve.append(_mean(fed.test_accuracy(models, assignment)))
    return _Trace(curve, assignment, 0)


def _group_round(
    training: GroupTraining, models: list[Weights], assignment: Sequence[int], round_: int
) -> list[Weights]:
    """One round of every group; a group nobody trained keeps its model."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(assignment):
        members.setdefault(g, []).append(i)
    new = list(models)
    for g, arrays in training.round(dict(enumerate(models)), members, round_).items():
        new[g] = arrays
    return new


def run_global(fed: Federation) -> _Trace:
    """One FedAvg group of all clients."""
    return run_fixed_groups(fed, [0] * fed.config.clients)


def run_oracle(fed: Federation) -> _Trace:
    """FedAvg within the true clusters (one group when there are none)."""
    return run_fixed_groups(fed, [0 if c is None else c for c in fed.labels])


def run_ifca(fed: Federation) -> _Trace:
    """IFCA (Ghosh et al. 2020): K models; each client trains the one with its lowest loss."""
    k = fed.config.clusters
    models = [fed.initial(fed.config.seed + j) for j in range(k)]
    training = GroupTraining(fed, salt=1)
    choice: list[int] = []
    migrations = 0
    curve = []
    for round_ in range(fed.config.rounds):
        loss, _ = fed.ops.evaluate_matrix(models, fed.x_train, fed.y_train)
        new_choice = [int(j) for j in loss.argmin(axis=0)]
        if choice:
            migrations += sum(a != b for a, b in zip(choice, new_choice, strict=True))
        choice = new_choice
        models = _group_round(training, models, choice, round_)
        curve.append(_mean(fed.test_accuracy(models, choice)))
    return _Trace(curve, choice, migrations)


# --- policy-driven algorithms (mycelium, naive) ---------------------------------------------


@dataclass
class _Network:
    """Live groups of a policy run: models, members, each group's scores on every client."""

    models: dict[int, Weights] = field(default_factory=dict)
    members: dict[int, set[int]] = field(default_factory=dict)
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    published: dict[int, float] = field(default_factory=dict)
    next_id: int = 0

    def found(self, model: Weights) -> int:
        gid = self.next_id
        self.next_id += 1
        self.models[gid], self.members[gid] = model, set()
        return gid

    def move(self, client: int, old: int | None, new: int) -> None:
        if old is not None:
            self.members[old].discard(client)
            if not self.members[old]:
                for table in (self.models, self.members, self.scores, self.published):
                    table.pop(old, None)
        self.members[new].add(client)


class PolicyRun:
    """``mycelium`` (probe candidates on own val data) or ``naive`` (published accuracy)."""

    def __init__(self, fed: Federation, *, probe: bool) -> None:
        self.fed, self.probe = fed, probe
        self.config = fed.config
        n = fed.config.clients
        self.local = [fed.initial(fed.config.seed)] * n
        self.local_scores = np.zeros(n, dtype=np.float64)
        self.states = [NodeState(None, None, 0.0, None, 0.0) for _ in range(n)]
        self.net = _Network()
        self.training = GroupTraining(fed, salt=3)
        self.migrations = 0

    def run(self) -> _Trace:
        curve = []
        for round_ in range(self.config.rounds):
            self._train(round_)
            self._score()
            self._decide(round_, now=(round_ + 1) * ROUND_SECONDS)
            curve.append(_mean(self._test()))
        return _Trace(curve, self._assignment(), self.migrations)

    def _group_of(self, client: int) -> int | None:
        return self.states[client].current_group_id

    def _train(self, round_: int) -> None:
        """Group members train and each group aggregates with FedAvg; a node without a group
        trains its local model (a member's local model and score stay as they were)."""
        n = self.config.clients
        alone = [i for i in range(n) if self._group_of(i) is None]
        grouped = [i for i in range(n) if self._group_of(i) is not None]
        if alone:
            trained = self.fed.train([self.local[i] for i in alone], alone, round_, salt=2)
            for i, weights in zip(alone, trained, strict=True):
                self.local[i] = weights
            _, scores = self.fed.ops.evaluate_pairs(
                trained, [self.fed.x_val[i] for i in alone], [self.fed.y_val[i] for i in alone]
            )
            self.local_scores[alone] = scores
        if grouped:
            members = {gid: sorted(m) for gid, m in self.net.members.items()}
            self.net.models.update(self.training.round(self.net.models, members, round_))

    def _score(self) -> None:
        """Every group model on every client's own validation split (the probes)."""
        gids = sorted(self.net.models)
        self.net.scores = {}
        if gids:
            _, acc = self.fed.ops.evaluate_matrix(
                [self.net.models[g] for g in gids], self.fed.x_val, self.fed.y_val
            )
            self.net.scores = dict(zip(gids, acc, strict=True))
        self.net.published = {
            g: _mean([self.net.scores[g][i] for i in self.net.members[g]]) for g in gids
        }

    def _view(self, client: int, gid: int) -> float:
        """How ``client`` sees group ``gid``: its own probe, or the group's published figure."""
        if self.probe:
            return float(self.net.scores[gid][client])
        return self.net.published[gid]

    def _decide(self, round_: int, now: float) -> None:
        order = np.random.default_rng([self.config.seed, round_, 7]).permutation(len(self.states))
        for client in order:
            self._decide_one(int(client), now)

    def _decide_one(self, client: int, now: float) -> None:
        current = self._group_of(client)
        state = self.states[client]
        state = NodeState(
            current_group_id=current,
            current_score=None if current is None else self._view(client, current),
            local_score=float(self.local_scores[client]),
            last_move_at=state.last_move_at,
            started_at=state.started_at,
            penalty=state.penalty,
            val_size=len(self.fed.y_val[client]),
        )
        candidates = [
            Candidate(g, self._view(client, g), len(m), self.config.max_capacity)
            for g, m in sorted(self.net.members.items())
        ]
        decision = decide(state, candidates, self.config.policy, now)
        if decision.action == "stay":
            self.states[client] = state
            return
        target = decision.group_id
        if decision.action == "found":
            target = self._found(client)
        elif decision.action == "migrate":
            self.migrations += 1
        self.net.move(client, current, target)
        score = self._view(client, target)
        self.states[client] = record_move(state, target, score, self.config.policy, now)

    def _found(self, client: int) -> int:
        """A new group seeded with the founder's local model, probed by every client."""
        gid = self.net.found(self.local[client])
        _, acc = self.fed.ops.evaluate_matrix([self.local[client]], self.fed.x_val, self.fed.y_val)
        self.net.scores[gid] = acc[0]
        self.net.published[gid] = float(self.local_scores[client])
        return gid

    def _assignment(self) -> list[int]:
        """Group per client; clients without a group count as their own singleton."""
        gids = sorted(self.net.members)
        index = {g: k for k, g in enumerate(gids)}
        result = []
        for i in range(self.config.clients):
            g = self._group_of(i)
            result.append(index[g] if g is not None else len(gids) + i)
        return result

    def _test(self) -> list[float]:
        n = self.config.clients
        gids = sorted(self.net.models)
        models = [self.net.models[g] for g in gids] + self.local
        index = {g: k for k, g in enumerate(gids)}
        model_of = [
            index[self._group_of(i)] if self._group_of(i) is not None else len(gids) + i
            for i in range(n)
        ]
        return self.fed.test_accuracy(models, model_of)


def run_mycelium(fed: Federation) -> _Trace:
    return PolicyRun(fed, probe=True).run()


def run_naive(fed: Federation) -> _Trace:
    return PolicyRun(fed, probe=False).run()


RUNNERS: dict[str, Callable[[Federation], _Trace]] = {
    "local": run_local,
    "global": run_global,
    "oracle": run_oracle,
    "ifca": run_ifca,
    "naive": run_naive,
    "mycelium": run_mycelium,
}


# --- metrics, driver, output ----------------------------------------------------------------


def purity(assignment: Sequence[int], labels: Sequence[int | None]) -> float | None:
    """Share of clients that belong to their group's majority cluster (None without clusters)."""
    if any(label is None for label in labels):
        return None
    majority = 0
    for g in set(assignment):
        counts = np.bincount([labels[i] for i, a in enumerate(assignment) if a == g])
        majority += int(counts.max())
    return majority / len(assignment)


def run_algorithm(fed: Federation, algorithm: str) -> RunResult:
    """Run one algorithm on ``fed`` and measure it."""
    started = time.perf_counter()
    trace = RUNNERS[algorithm](fed)
    elapsed = time.perf_counter() - started
    logger.info("%s %s: %.3f in %.1f s", fed.config.scenario, algorithm, trace.curve[-1], elapsed)
    return RunResult(
        algorithm=algorithm,
        accuracy=round(trace.curve[-1], 4),
        accuracy_per_round=tuple(round(a, 4) for a in trace.curve),
        migrations=trace.migrations,
        groups=len(set(trace.assignment)),
        purity=_round(purity(trace.assignment, fed.views)),
        seconds_per_round=elapsed / fed.config.rounds,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def rounds_to_reach(curve: Sequence[float], target: float) -> int | None:
    """First round (1-based) whose accuracy reaches ``target``."""
    return next((r + 1 for r, a in enumerate(curve) if a >= target), None)


def simulate(config: SimConfig, algorithms: Sequence[str]) -> list[RunResult]:
    """All ``algorithms`` on one federation; oracle's final accuracy sets the 90% mark."""
    fed = Federation(config)
    results = [run_algorithm(fed, a) for a in algorithms]
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
