"""The registry as a group's ServerApp sees it: its member list, its model, round reports.

Every failure is logged and never raised: training goes on through registry outages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mycelium.client import NotFound, RegistryClient, RegistryError
from mycelium.flower.protocol import ACCURACY_KEY, LOSS_KEY, NUM_EXAMPLES_KEY, NUM_NODES_KEY
from mycelium.learning import codec

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, MetricRecord

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"failed", "dissolved"})


@dataclass(frozen=True)
class RoundOutcome:
    """Aggregate of one round's valid replies."""

    arrays: list[np.ndarray]
    accuracy: float
    loss: float
    num_nodes: int
    num_examples: int

    @classmethod
    def from_records(cls, arrays: ArrayRecord, metrics: MetricRecord) -> RoundOutcome:
        """From what :meth:`LiveMembersFedAvg.aggregate_train` returns."""
        return cls(
            arrays=[a.astype(np.float32) for a in arrays.to_numpy_ndarrays()],
            accuracy=min(1.0, max(0.0, float(metrics[ACCURACY_KEY]))),
            loss=max(0.0, float(metrics[LOSS_KEY])),
            num_nodes=int(metrics[NUM_NODES_KEY]),
            num_examples=int(metrics[NUM_EXAMPLES_KEY]),
        )


class GroupRegistry:
    """The group's registry calls; with no ``registry_url`` every call is a no-op."""

    def __init__(
        self, registry_url: str, group_id: int, *, token: str | None, timeout: float
    ) -> None:
        self._gid = group_id
        self._client: RegistryClient | None = None
        if registry_url:
            self._client = RegistryClient(registry_url, token=token or None, timeout=timeout)

    def __enter__(self) -> GroupRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def group(self) -> dict[str, Any] | None:
        """The group's detail, or None when the registry is unset or unreachable."""
        if self._client is None:
            return None
        try:
            return self._client.get_group(self._gid)
        except NotFound:
            return {"status": "dissolved", "members": []}
        except RegistryError as exc:
            logger.warning("registry unreachable (get group %s): %s", self._gid, exc)
            return None

    def model(self) -> list[np.ndarray] | None:
        if self._client is None:
            return None
        try:
            data = self._client.get_model(self._gid)
            return codec.bytes_to_weights(data) if data is not None else None
        except (RegistryError, ValueError) as exc:
            logger.warning("could not load group %s's model: %s", self._gid, exc)
            return None

    def publish(self, server_round: int, outcome: RoundOutcome) -> None:
        if self._client is None:
            return
        try:
            self._client.put_model(self._gid, codec.weights_to_bytes(outcome.arrays))
            self._client.report_round(
                self._gid,
                round=server_round,
                accuracy=outcome.accuracy,
                loss=outcome.loss,
                num_nodes=outcome.num_nodes,
                num_examples=outcome.num_examples,
            )
        except RegistryError as exc:
            logger.warning("registry: round %s not published: %s", server_round, exc)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def start_point(
    registry: GroupRegistry,
    group: Mapping[str, Any] | None,
    shapes: list[tuple[int, ...]],
    fresh: list[np.ndarray],
) -> tuple[list[np.ndarray], int]:
    """The registry's model and the round after its last one when it has a model of the
    right ``shapes`` (a restarted or re-formed group resumes), else ``fresh`` at round 1."""
    arrays = registry.model()
    if arrays is not None and [a.shape for a in arrays] == shapes:
        last = (group or {}).get("round")
        start = int(last) + 1 if isinstance(last, int) else 1
        logger.info("resuming from the registry's model at round %s", start)
        return [a.astype(np.float32) for a in arrays], start
    if arrays is not None:
        logger.warning("registry model has the wrong shapes; starting fresh")
    return fresh, 1
