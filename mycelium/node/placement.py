"""Where the node belongs: choose which live groups to probe
(:func:`mycelium.learning.candidates.choose_candidates`, the same choice as the
simulation's), probe their models on its own validation data, turn them into candidates,
and let :func:`mycelium.learning.policy.decide` choose.

:class:`Placement` holds the node's one :class:`policy.NodeState`: its last move and flap
penalty change only through :func:`policy.record_move`; its current group, current score,
local score, the groups it left unprobed and its score as a member at its last decision to
stay are refreshed at each decision.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mycelium.api import GroupPublic
from mycelium.client import RegistryClient, RegistryError
from mycelium.learning import candidates as choice
from mycelium.learning import policy
from mycelium.procs import port_is_open

if TYPE_CHECKING:
    from mycelium.flower.trainer import LocalTrainer

logger = logging.getLogger(__name__)


# A TCP connect waits 0.5 s, and a lost SYN (or SYN-ACK) is only sent again after 1 s: on a
# link that drops 2% of packets each way, about 8% of single connects across two such links
# fail, and each made a healthy group look dead (bench faults, lossy: 10 groups founded and
# dissolved in 7 minutes). Three connects, each a fresh SYN, fail together about 0.05% of
# the time; a dead SuperLink on a live host refuses at once, a lost host costs 1.5 s.
REACH_ATTEMPTS = 3


def superlink_reachable(
    fleet_address: str, *, connect: Callable[[int, str], bool] = port_is_open
) -> bool:
    """A TCP connect to the group's SuperLink (host:port) succeeds, in one of
    ``REACH_ATTEMPTS`` tries (``connect(port, host)``: one try)."""
    host, _, port = fleet_address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        return False
    return any(connect(number, host or "127.0.0.1") for _ in range(REACH_ATTEMPTS))


class Placement:
    """Probe -> candidates -> decide, for one node (see the module docstring)."""

    def __init__(
        self,
        registry: RegistryClient,
        trainer: LocalTrainer,
        *,
        policy_config: policy.PolicyConfig,
        invite_ok: bool,
        max_candidates: int,
        clock: Callable[[], float],
        admissible: Callable[[GroupPublic], bool] = lambda group: True,
        seed: int = 0,
    ) -> None:
        """``admissible``: the node's trust rule for a group (see mycelium.net.trust);
        groups it refuses are not candidates."""
        self.admissible = admissible
        self.registry = registry
        self.trainer = trainer
        self.policy_config = policy_config
        self.invite_ok = invite_ok
        self.choice = choice.ChoiceConfig(max_candidates=max_candidates)
        self.clock = clock
        self.seed = seed  # of the exploration; the n-th decision draws with (seed, n)
        self.decisions = 0
        self.moves = 0
        # group id -> (sha256, our score) of the last model version of it we scored
        self.scored: dict[int, tuple[str, float]] = {}
        self.downloads = 0  # models downloaded and scored
        self.unchanged = 0  # probes answered 304: the version we had scored already
        self.state = policy.NodeState(
            current_group_id=None,
            current_score=None,
            local_score=0.0,
            last_move_at=None,
            started_at=clock(),
            # Differences smaller than this split's sampling noise are not evidence.
            val_size=trainer.val_size,
        )

    def warmed_up(self) -> None:
        """The policy's warm-up is the local epochs the agent just trained."""
        self.state = dataclasses.replace(self.state, started_at=self.clock())

    def decide(self, groups: list[GroupPublic], current_id: int | None) -> policy.Decision:
        """Probe ``groups`` (the current one ``current_id`` included) and decide."""
        candidates, current_score, unprobed = self.probe(groups, current_id)
        stayed = self.state.current_group_id == current_id and current_id is not None
        self.state = dataclasses.replace(
            self.state,
            current_group_id=current_id,
            current_score=current_score,
            local_score=self.trainer.local_score(),
            unprobed=unprobed,
            previous_score=self.state.previous_score if stayed else None,
        )
        decision = policy.decide(self.state, candidates, self.policy_config, self.clock())
        if decision.action == "stay" and current_score is not None:
            self.state = dataclasses.replace(self.state, previous_score=current_score)
        return decision

    def probed_score(self, group_id: int) -> float | None:
        """The probe of ``group_id`` at the last decision, if it was the node's group then."""
        state = self.state
        return state.current_score if state.current_group_id == group_id else None

    def current_group_vanished(self) -> bool:
        """The last decision found the node's group gone (no model to probe)."""
        return self.state.current_group_id is not None and self.state.current_score is None

    def record_move(self, group_id: int) -> None:
        moved = policy.record_move(self.state, group_id, None, self.policy_config, self.clock())
        self.state = dataclasses.replace(moved, previous_score=None)
        self.moves += 1

    def probe(
        self, groups: list[GroupPublic], current_id: int | None
    ) -> tuple[list[policy.Candidate], float | None, int]:
        """Score the chosen live groups' models on our own validation data (the current
        group included); also returns how many live groups were left unprobed."""
        # A group whose SuperLink does not answer cannot train us, whatever the registry says.
        live = [
            g
            for g in groups
            if g.alive
            and g.has_model
            and superlink_reachable(g.fleet_address)
            and self.admissible(g)
        ]
        chosen = choice.choose_candidates(
            [_listing(g) for g in live],
            current_group_id=current_id,
            config=self.choice,
            seed=self.seed * 1_000_003 + self.decisions,
        )
        self.decisions += 1
        by_id = {g.group_id: g for g in live}
        self.scored = {gid: known for gid, known in self.scored.items() if gid in by_id}
        others = [by_id[gid] for gid in chosen]
        current = [g for g in live if g.group_id == current_id]
        unprobed = len(live) - len(current) - len(others)
        candidates: list[policy.Candidate] = []
        current_score: float | None = None
        for group in current + others:
            accuracy = self._score(group.group_id)
            if accuracy is None:
                continue
            if group.group_id == current_id:
                current_score = accuracy
            candidates.append(self._candidate(group, accuracy))
        return candidates, current_score, unprobed

    def _candidate(self, group: GroupPublic, score: float) -> policy.Candidate:
        return policy.Candidate(
            group_id=group.group_id,
            score=score,
            size=int(group.num_members),
            capacity=int(group.max_capacity),
            join_policy=group.join_policy,
            invite_ok=self.invite_ok,
        )

    def _score(self, group_id: int) -> float | None:
        """Our accuracy with the group's latest model (None: no usable model). A version
        scored before is neither downloaded (the registry answers 304) nor scored again:
        the score of given weights on our own validation split does not change."""
        from mycelium.learning.codec import bytes_to_weights

        known = self.scored.get(group_id)
        try:
            version = self.registry.model_version(group_id, known[0] if known else None)
        except RegistryError as exc:
            logger.warning("could not download group %s's model: %s", group_id, exc)
            return None
        if version is None:
            self.scored.pop(group_id, None)
            return None
        if version.data is None and known is not None and known[0] == version.sha256:
            self.unchanged += 1
            return known[1]
        if version.data is None:  # 304 for a version we do not hold: ask plainly
            self.scored.pop(group_id, None)
            return self._score(group_id)
        self.downloads += 1
        try:
            _, accuracy = self.trainer.evaluate_arrays(bytes_to_weights(version.data))
        except ValueError as exc:  # not our model's shapes, or not a model at all
            logger.warning("group %s's model is unusable: %s", group_id, exc)
            return None
        self.scored[group_id] = (version.sha256, accuracy)
        return accuracy


def _listing(group: GroupPublic) -> choice.Listing:
    """A discovery row as the candidate choice sees it: verified figure beside the claim."""
    return choice.Listing(
        group_id=group.group_id,
        size=int(group.num_members),
        verified=group.verified_accuracy,
        verified_members=int(group.verified_members or 0),
        claimed=group.accuracy,
    )
