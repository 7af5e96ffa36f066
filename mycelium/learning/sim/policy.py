"""Policy-driven algorithms of the simulation: every node calls the real ``decide`` each round.

* ``mycelium``: candidates from :func:`mycelium.learning.candidates.choose_candidates` over the
  registry view (sorted by verified accuracy), each scored by the node's own probe;
* ``first-k``: the same probes, but the first ``max_candidates`` groups of discovery sorted
  by the groups' own claims (the agent's candidate choice before issue 15);
* ``naive``: the same ``decide`` fed each group's claim instead of a probe.

One round: arrivals and departures (a leaving node quits its group), the drift (a drifted
node's local score is re-measured on its new data), training (members from their group's
model, each group aggregating with its own strategy, :mod:`mycelium.learning.sim.groups`;
nodes without a group train their local model), probes of every
group model on every client's validation split, the registry view refreshed from them, then
every present node decides in a seeded random order with live sizes and capacity.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from mycelium.learning.candidates import ChoiceConfig, choose_candidates
from mycelium.learning.policy import Candidate, NodeState, decide, record_move
from mycelium.learning.sim.federation import (
    ROUND_SECONDS,
    Federation,
    Trace,
    mean,
    seed_of,
)
from mycelium.learning.sim.groups import GroupTraining
from mycelium.learning.sim.personal import local_models, personal_accuracy, trained_local
from mycelium.learning.sim.registry import RegistryView, claims_order
from mycelium.learning.tasks.base import Weights

FOLLOW_WINDOW_ROUNDS = 4


@dataclass
class _Network:
    """Live groups of a policy run: models, members, each group's scores on every client, and
    where nodes leaving each group went (round, target), for the candidates' *followed*."""

    models: dict[int, Weights] = field(default_factory=dict)
    members: dict[int, set[int]] = field(default_factory=dict)
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    left_for: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    next_id: int = 0

    def found(self, model: Weights) -> int:
        gid = self.next_id
        self.next_id += 1
        self.models[gid], self.members[gid] = model, set()
        return gid

    def move(self, client: int, old: int | None, new: int | None, round_: int) -> None:
        if old is not None:
            self.members[old].discard(client)
            if new is not None:
                self.left_for[old].append((round_, new))
            if not self.members[old]:
                for table in (self.models, self.members, self.scores, self.left_for):
                    table.pop(old, None)
        if new is not None:
            self.members[new].add(client)

    def followed(self, gid: int | None, round_: int) -> list[int]:
        """Live groups recently joined by nodes that left ``gid``, most recent first."""
        if gid is None:
            return []
        moves = reversed(self.left_for.get(gid, []))
        recent = [t for r, t in moves if round_ - r < FOLLOW_WINDOW_ROUNDS]
        return [t for t in dict.fromkeys(recent) if t in self.members]


class PolicyRun:
    """One policy-driven run; ``probe`` False = naive, ``choice`` "verified" or "claims";
    ``personal``: grouped nodes predict with their personal model where they chose it
    (:mod:`mycelium.learning.sim.personal`; the trace then keeps the plain group figures)."""

    def __init__(
        self, fed: Federation, *, probe: bool, choice: str = "verified", personal: bool = False
    ) -> None:
        self.fed, self.probe, self.choice, self.personal = fed, probe, choice, personal
        self.config = fed.config
        n = fed.config.clients
        self.local = [fed.initial(fed.config.seed)] * n
        self.local_scores = np.zeros(n, dtype=np.float64)
        self.states: list[NodeState | None] = [None] * n
        # The current group's score at the node's last decision to stay in it (None after a
        # move): a drop is measured against a score the node had as a member.
        self.member_score: list[float | None] = [None] * n
        self.net = _Network()
        self.registry = RegistryView()
        self.training = GroupTraining(fed, salt=3)
        self.migrations = 0
        # Each node's local-only model for its personal choice, apart from ``local``: the
        # policy's local model stops training once the node joins a group.
        self.own = local_models(fed, personal)

    def run(self) -> Trace:
        curve, group_curve, history = [], [], []
        used: dict[int, float] = {}
        plain: dict[int, float] = {}
        for round_ in range(self.config.rounds):
            present = self.fed.present(round_)
            self._arrive_and_leave(round_, present)
            self._drift(round_)
            self._train(round_, present)
            self._score(round_)
            self._decide(round_, present, now=(round_ + 1) * ROUND_SECONDS)
            plain = dict(zip(present, self._test(round_, present), strict=True))
            used = plain
            if self.personal:
                grouped = {
                    i: self.net.models[g] for i in present if (g := self._group_of(i)) is not None
                }
                own = trained_local(self.own, round_)
                used = plain | personal_accuracy(self.fed, grouped, plain, round_, own)
            curve.append(mean(list(used.values())))
            group_curve.append(mean(list(plain.values())))
            history.append({i: g for i in present if (g := self._group_of(i)) is not None})
        if not self.personal:
            return Trace(curve, history, self.migrations, used)
        return Trace(curve, history, self.migrations, used, group_curve, plain)

    def _group_of(self, client: int) -> int | None:
        state = self.states[client]
        return None if state is None else state.current_group_id

    def _arrive_and_leave(self, round_: int, present: list[int]) -> None:
        """Newcomers start warming up now; nodes that left quit their group for good."""
        here = set(present)
        for client in present:
            if self.states[client] is None:
                self.states[client] = NodeState(None, None, 0.0, None, round_ * ROUND_SECONDS)
        for client, state in enumerate(self.states):
            if state is not None and client not in here and state.current_group_id is not None:
                self.net.move(client, state.current_group_id, None, round_)
                self.states[client] = NodeState(None, None, 0.0, None, state.started_at)

    def _drift(self, round_: int) -> None:
        """At the drift, drifted nodes re-measure their local model on their new data."""
        if round_ != self.fed.timeline.drift_round:
            return
        who = [i for i, _ in self.fed.timeline.drifted]
        self.local_scores[who] = self.fed.local_scores([self.local[i] for i in who], who, round_)

    def _train(self, round_: int, present: list[int]) -> None:
        """Group members train and each group aggregates with its strategy; a node without a
        group trains its local model (a member's local model and score stay as they were)."""
        alone = [i for i in present if self._group_of(i) is None]
        grouped = [i for i in present if self._group_of(i) is not None]
        if alone:
            trained = self.fed.train([self.local[i] for i in alone], alone, round_, salt=2)
            for i, weights in zip(alone, trained, strict=True):
                self.local[i] = weights
            self.local_scores[alone] = self.fed.local_scores(trained, alone, round_)
        if grouped:
            members = {gid: sorted(m) for gid, m in self.net.members.items()}
            self.net.models.update(self.training.round(self.net.models, members, round_))

    def _score(self, round_: int) -> None:
        """Every group model on every client's own validation split (the probes), then the
        registry view members' reports and groups' claims give."""
        gids = sorted(self.net.models)
        self.net.scores = {}
        if gids:
            acc = self.fed.score_matrix([self.net.models[g] for g in gids], round_)
            self.net.scores = dict(zip(gids, acc, strict=True))
        self.registry = RegistryView.publish(self.net.members, self.net.scores, self.config.liars)

    def _view(self, client: int, gid: int) -> float:
        """How ``client`` sees group ``gid``: its own probe, or the group's claim."""
        if self.probe:
            return float(self.net.scores[gid][client])
        return self.registry.claims[gid]

    def _decide(self, round_: int, present: list[int], now: float) -> None:
        here = set(present)
        order = np.random.default_rng([self.config.seed, round_, 7]).permutation(len(self.states))
        for client in order:
            if int(client) in here:
                self._decide_one(int(client), round_, now)

    def _decide_one(self, client: int, round_: int, now: float) -> None:
        current = self._group_of(client)
        state = self.states[client]
        assert state is not None
        state = NodeState(
            current_group_id=current,
            current_score=None if current is None else self._view(client, current),
            local_score=float(self.local_scores[client]),
            last_move_at=state.last_move_at,
            started_at=state.started_at,
            penalty=state.penalty,
            val_size=len(self.fed.phase(round_).clients[client].y_val),
            previous_score=self.member_score[client],
        )
        probed = self._candidate_ids(client, current, round_)
        unprobed = len(self.net.members) - len(probed) - (current is not None)
        state = dataclasses.replace(state, unprobed=unprobed)
        if current is not None:
            probed = [current, *probed]
        candidates = [
            Candidate(g, self._view(client, g), len(self.net.members[g]), self.config.max_capacity)
            for g in probed
        ]
        decision = decide(state, candidates, self.config.policy, now)
        if decision.action == "stay":
            self.states[client] = state
            self.member_score[client] = state.current_score
            return
        target = decision.group_id
        if decision.action == "found":
            target = self._found(client, round_)
        elif decision.action == "migrate":
            self.migrations += 1
        if target is None:
            raise RuntimeError(f"decision {decision.action!r} without a group")
        self.net.move(client, current, target, round_)
        score = self._view(client, target)
        self.states[client] = record_move(state, target, score, self.config.policy, now)
        self.member_score[client] = None

    def _candidate_ids(self, client: int, current: int | None, round_: int) -> list[int]:
        """The groups ``client`` probes besides its own (see the module docstring)."""
        k = self.config.max_candidates
        if self.choice == "claims" or not self.probe:
            return [g for g in claims_order(self.registry, self.net.members) if g != current][:k]
        return choose_candidates(
            self.registry.listings(self.net.members),
            current_group_id=current,
            config=ChoiceConfig(max_candidates=k),
            seed=seed_of(self.config.seed, round_, client, 11),
            followed=self.net.followed(current, round_),
        )

    def _found(self, client: int, round_: int) -> int:
        """A new group seeded with the founder's local model, probed by every client and
        listed with the founder's figure."""
        gid = self.net.found(self.local[client])
        self.net.scores[gid] = self.fed.score_matrix([self.local[client]], round_)[0]
        self.registry.add(gid, [float(self.local_scores[client])])
        return gid

    def _test(self, round_: int, present: list[int]) -> list[float]:
        gids = sorted(self.net.models)
        models = [self.net.models[g] for g in gids] + self.local
        index = {g: k for k, g in enumerate(gids)}
        model_of = {
            i: index[g] if (g := self._group_of(i)) is not None else len(gids) + i for i in present
        }
        return self.fed.test_accuracy(models, model_of, round_)


def run_mycelium(fed: Federation) -> Trace:
    """The agent: probes, verified candidates, and a personal model per node unless the
    run's ``personal`` is "none"."""
    return PolicyRun(fed, probe=True, personal=fed.config.personal != "none").run()


def run_first_k(fed: Federation) -> Trace:
    return PolicyRun(fed, probe=True, choice="claims").run()


def run_naive(fed: Federation) -> Trace:
    return PolicyRun(fed, probe=False).run()
