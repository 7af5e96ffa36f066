"""Where the node belongs: probe the live groups' models on its own validation data, turn
them into candidates, and let :func:`mycelium.learning.policy.decide` choose.

:class:`Placement` holds the node's one :class:`policy.NodeState`: its last move and flap
penalty change only through :func:`policy.record_move`; its current group, current score
and local score are refreshed at each decision.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mycelium.client import RegistryClient, RegistryError
from mycelium.learning import policy
from mycelium.procs import port_is_open

if TYPE_CHECKING:
    from mycelium.flower.trainer import LocalTrainer

logger = logging.getLogger(__name__)


def superlink_reachable(fleet_address: str) -> bool:
    """A TCP connect to the group's SuperLink (host:port) succeeds."""
    host, _, port = fleet_address.rpartition(":")
    try:
        return port_is_open(int(port), host or "127.0.0.1")
    except ValueError:
        return False


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
    ) -> None:
        self.registry = registry
        self.trainer = trainer
        self.policy_config = policy_config
        self.invite_ok = invite_ok
        self.max_candidates = max_candidates
        self.clock = clock
        self.moves = 0
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

    def decide(self, groups: list[dict[str, Any]], current_id: int | None) -> policy.Decision:
        """Probe ``groups`` (the current one ``current_id`` included) and decide."""
        candidates, current_score = self.probe(groups, current_id)
        self.state = dataclasses.replace(
            self.state,
            current_group_id=current_id,
            current_score=current_score,
            local_score=self.trainer.local_score(),
        )
        return policy.decide(self.state, candidates, self.policy_config, self.clock())

    def current_group_vanished(self) -> bool:
        """The last decision found the node's group gone (no model to probe)."""
        return self.state.current_group_id is not None and self.state.current_score is None

    def record_move(self, group_id: int) -> None:
        self.state = policy.record_move(
            self.state, group_id, None, self.policy_config, self.clock()
        )
        self.moves += 1

    def probe(
        self, groups: list[dict[str, Any]], current_id: int | None
    ) -> tuple[list[policy.Candidate], float | None]:
        """Score live groups' models on our own validation data (current group included)."""
        from mycelium.learning.codec import bytes_to_weights

        # A group whose SuperLink does not answer cannot train us, whatever the registry says.
        live = [
            g
            for g in groups
            if g.get("alive", True)
            and g.get("has_model")
            and superlink_reachable(g["fleet_address"])
        ]
        others = [g for g in live if g["group_id"] != current_id][: self.max_candidates]
        current = [g for g in live if g["group_id"] == current_id]
        candidates: list[policy.Candidate] = []
        current_score: float | None = None
        for group in current + others:
            blob = self._fetch_model(group["group_id"])
            if blob is None:
                continue
            try:
                _, accuracy = self.trainer.evaluate_arrays(bytes_to_weights(blob))
            except ValueError as exc:  # not our model's shapes, or not a model at all
                logger.warning("group %s's model is unusable: %s", group["group_id"], exc)
                continue
            if group["group_id"] == current_id:
                current_score = accuracy
            candidates.append(self._candidate(group, accuracy))
        return candidates, current_score

    def _candidate(self, group: dict[str, Any], score: float) -> policy.Candidate:
        return policy.Candidate(
            group_id=group["group_id"],
            score=score,
            size=int(group["num_members"]),
            capacity=int(group["max_capacity"]),
            join_policy=group["join_policy"],
            invite_ok=self.invite_ok,
        )

    def _fetch_model(self, group_id: int) -> bytes | None:
        try:
            return self.registry.get_model(group_id)
        except RegistryError as exc:
            logger.warning("could not download group %s's model: %s", group_id, exc)
            return None
