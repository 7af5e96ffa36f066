"""The registry as a group's ServerApp sees it: its member list, its model, round reports.

Every failure is logged and never raised: training goes on through registry outages. After
the registry was unreachable, calls are skipped (the last member list holds) until a backoff
with jitter, capped at :data:`RETRY_CAP_S`, has passed: an idle group polls its detail every
second, and a hundred groups must not hammer a registry that comes back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mycelium.api import GroupDetail
from mycelium.client import (
    Backoff,
    NotFound,
    RegistryClient,
    RegistryEndpoints,
    RegistryError,
    RegistryUnavailable,
)
from mycelium.fingerprint import FingerprintError, ModelSpec
from mycelium.flower.protocol import (
    ACCURACY_KEY,
    LOSS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_NODES_KEY,
    metric_number,
)
from mycelium.learning import codec

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, MetricRecord

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"failed", "dissolved"})
RETRY_CAP_S = 30.0
RETRY = Backoff(first=1.0, cap=RETRY_CAP_S)


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
        """From what :meth:`~mycelium.flower.strategy.LiveMembers.aggregate_train` returns."""
        return cls(
            arrays=arrays.to_numpy_ndarrays(),
            accuracy=min(1.0, max(0.0, metric_number(metrics[ACCURACY_KEY]))),
            loss=max(0.0, metric_number(metrics[LOSS_KEY])),
            num_nodes=int(metric_number(metrics[NUM_NODES_KEY])),
            num_examples=int(metric_number(metrics[NUM_EXAMPLES_KEY])),
        )


class GroupRegistry:
    """The group's registry calls; with no registry every call is a no-op."""

    def __init__(
        self,
        registry: RegistryEndpoints | str | None,
        group_id: int,
        *,
        token: str | None,
        timeout: float,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gid = group_id
        self.gone = False  # the registry answered 404: the group no longer exists
        self._clock = clock
        self._failures = 0  # calls in a row that found the registry unreachable
        self._retry_at = 0.0
        self._client: RegistryClient | None = None
        if registry:  # a string is the run config's: URL1,URL2 (empty: no registry)
            self._client = RegistryClient(
                registry, token=token or None, timeout=timeout, ca_file=ca_file
            )

    def __enter__(self) -> GroupRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backing_off(self) -> bool:
        """True while a call would come too soon after the registry was unreachable."""
        return self._client is None or self._clock() < self._retry_at

    def _outcome(self, exc: RegistryError | None) -> None:
        """Count an unreachable registry (and set the next try), or forget the failures."""
        if not isinstance(exc, RegistryUnavailable):
            self._failures = 0
            return
        self._retry_at = self._clock() + RETRY.delay(self._failures)
        self._failures += 1

    def group(self) -> GroupDetail | None:
        """The group's detail, or None when the registry is unset, unreachable or backed
        off from, or no longer lists the group (then :attr:`gone` is set)."""
        if self._client is None or self._backing_off():
            return None
        try:
            detail = self._client.get_group(self._gid)
        except NotFound:
            self.gone = True
            return None
        except RegistryError as exc:
            self._outcome(exc)
            logger.warning("registry unreachable (get group %s): %s", self._gid, exc)
            return None
        self._outcome(None)
        return detail

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
        if self._client is None or self._backing_off():
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
            self._outcome(exc)
            logger.warning("registry: round %s not published: %s", server_round, exc)
            return
        self._outcome(None)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def ended(self, group: GroupDetail | None) -> bool:
        """The group was dissolved or failed: the registry says so, or no longer lists it."""
        return self.gone or (group is not None and group.status in TERMINAL_STATUSES)


def group_spec(group: GroupDetail | None) -> ModelSpec | None:
    """The group's model fingerprint spec as the registry lists it (None if it has none)."""
    raw = group.model_spec if group is not None else None
    try:
        return ModelSpec.from_json(raw) if raw else None
    except FingerprintError as exc:
        logger.warning("registry lists a malformed model spec (%s); checking shapes only", exc)
        return None


def start_point(
    registry: GroupRegistry,
    last_round: int | None,
    spec: ModelSpec | None,
    given: list[np.ndarray] | None,
) -> tuple[list[np.ndarray], int] | None:
    """Where the rounds start: the registry's model (the founder's seed, or a restarted or
    re-formed group's last model) and the round after ``last_round``; else the ``given``
    arrays (run config ``initial-model``) at round 1; None when there is neither yet.
    Arrays that do not fit ``spec`` are skipped (logged)."""
    arrays = registry.model()
    if arrays is not None and (spec is None or spec.fits(arrays)):
        start = last_round + 1 if last_round is not None else 1
        logger.info("starting from the registry's model at round %s", start)
        return arrays, start
    if arrays is not None:
        logger.warning("the registry's model does not fit the group's fingerprint")
    if given is not None and (spec is None or spec.fits(given)):
        return given, 1
    if given is not None:
        logger.warning("initial-model does not fit the group's fingerprint")
    return None
