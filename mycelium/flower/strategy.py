"""The group's strategy: one of flwr's own strategy classes over the group's LIVE members.

:class:`LiveMembers` is a small mixin put in front of ``FedAvg``, ``FedProx``, ``FedAdam``,
``FedYogi`` or ``FedAdagrad`` (:func:`group_strategy` picks the class from the group's
:class:`~mycelium.learning.strategy.StrategyConfig`). Two methods change, both still calling
flwr's own implementation for the arithmetic:

- ``configure_train`` offers flwr only the target Flower ids (online ids that live members
  claimed in the registry, plus ids nobody claimed yet for ``unclaimed_grace`` seconds; never
  dead members, so a killed node does not stall a round for Flower's ~50 s offline
  detection) and gives the messages a TTL (the round timeout) so those of a timed-out round
  expire at the SuperLink instead of piling up on slow nodes. FedProx adds ``proximal-mu``
  to the config and FedOpt strategies remember the arrays sent, as flwr does.
- ``aggregate_train`` drops unusable replies (errors, arrays that do not fit the group's
  model fingerprint, non-finite values, no examples) one by one instead of failing the whole
  round as flwr's consistency check does, lets flwr aggregate the rest, and casts the result
  to the fingerprint's dtypes (FedAdam's arithmetic yields float64); the round's metrics
  also count its nodes and examples.

Members score the model they receive on their own validation split inside their TRAIN
reply, so there is no separate evaluation round. numpy only: no torch and no model shapes
in the ServerApp (the fingerprint comes from the registry or the starting arrays).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message import make_message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedProx, FedYogi
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from mycelium.api import NodePublic
from mycelium.fingerprint import FingerprintError, ModelSpec
from mycelium.flower.protocol import (
    ACCURACY_KEY,
    ARRAYS_KEY,
    CONFIG_KEY,
    LOSS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_NODES_KEY,
    metric_number,
)
from mycelium.learning.strategy import StrategyConfig, TargetGrid, quiet_flwr

logger = logging.getLogger(__name__)

# Shapes of mycelium.learning.model's MLP 64-64-10 in get_weights order: test data only (the
# ServerApp itself knows no shapes); a test checks they match the torch model.
MODEL_SHAPES: tuple[tuple[int, ...], ...] = ((64, 64), (64,), (10, 64), (10,))


def initial_arrays(seed: int) -> list[np.ndarray]:
    """Deterministic numpy MLP weights with torch Linear's default bounds (tests' models)."""
    rng = np.random.default_rng(seed)
    arrays: list[np.ndarray] = []
    for shape in MODEL_SHAPES:
        fan_in = shape[1] if len(shape) == 2 else arrays[-1].shape[1]
        bound = 1.0 / math.sqrt(fan_in)
        arrays.append(rng.uniform(-bound, bound, size=shape).astype(np.float32))
    return arrays


def select_targets(
    online: Iterable[int],
    members: Sequence[NodePublic] | None,
    first_seen: Mapping[int, float],
    now: float,
    grace: float,
) -> list[int]:
    """Flower ids to train this round (see the module docstring). ``members=None``: no
    registry view yet, so every online node trains."""
    online_ids = sorted(set(online))
    if members is None:
        return online_ids
    claimed = {m.flower_node_id for m in members if m.flower_node_id is not None}
    live = {m.flower_node_id for m in members if m.alive and m.flower_node_id is not None}
    return [
        nid
        for nid in online_ids
        if nid in live or (nid not in claimed and now - first_seen.get(nid, now) < grace)
    ]


def valid_content(msg: Message, spec: ModelSpec | None) -> RecordDict | None:
    """The reply's content if it is a usable training result, else None (logged)."""
    node = msg.metadata.src_node_id
    if msg.has_error():
        logger.warning("node %s replied with an error: %s", node, msg.error.reason)
        return None
    content = msg.content
    try:
        arrays = content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
        metrics = content.metric_records[METRICS_KEY]
        weight = metric_number(metrics[NUM_EXAMPLES_KEY])
        acc, loss = metric_number(metrics[ACCURACY_KEY]), metric_number(metrics[LOSS_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("node %s sent an incomplete reply: %s", node, exc)
        return None
    if spec is not None:
        try:
            spec.check(arrays)
        except FingerprintError as exc:
            logger.warning("node %s sent a model that does not fit: %s", node, exc)
            return None
    finite = all(np.isfinite(a).all() for a in arrays) and math.isfinite(acc + loss)
    if weight <= 0 or not finite:
        logger.warning("node %s sent a degenerate reply (examples=%s)", node, weight)
        return None
    # Keep only the two records the aggregation helpers expect, with the metrics all
    # replies share (a member may send more).
    kept = MetricRecord({k: metrics[k] for k in (NUM_EXAMPLES_KEY, ACCURACY_KEY, LOSS_KEY)})
    return RecordDict({ARRAYS_KEY: content.array_records[ARRAYS_KEY], METRICS_KEY: kept})


def round_metrics(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """flwr's weighted mean of the replies' metrics, plus the round's node and example
    counts."""
    metrics = aggregate_metricrecords(contents, weighted_by_key)
    metrics[NUM_NODES_KEY] = len(contents)
    examples = sum(
        int(metric_number(c.metric_records[METRICS_KEY][weighted_by_key])) for c in contents
    )
    metrics[NUM_EXAMPLES_KEY] = examples
    return metrics


class LiveMembers(FedAvg):
    """Mixin in front of a flwr strategy class (see the module docstring); every one of them
    is a FedAvg, so the mixin derives from it and its ``super()`` calls are typed (in a
    ``LiveFedProx`` the MRO still runs LiveMembers, FedProx, FedAvg).

    The round loop keeps :attr:`members` (the registry's member list, or None before the
    first answer), :attr:`message_ttl` (its round timeout) and :attr:`spec` (the group's
    model fingerprint) current.
    """

    def __init__(
        self,
        *,
        unclaimed_grace: float,
        spec: ModelSpec | None = None,
        clock: Callable[[], float] = time.monotonic,
        **strategy_kwargs: Any,
    ) -> None:
        super().__init__(  # the flwr class after us in the MRO
            min_train_nodes=0,
            min_available_nodes=0,
            weighted_by_key=NUM_EXAMPLES_KEY,
            arrayrecord_key=ARRAYS_KEY,
            configrecord_key=CONFIG_KEY,
            train_metrics_aggr_fn=round_metrics,
            **strategy_kwargs,
        )
        self.unclaimed_grace = unclaimed_grace
        self.spec = spec
        self.clock = clock
        self.members: list[NodePublic] | None = None
        self.message_ttl: float | None = None
        self.first_seen: dict[int, float] = {}

    def targets(self, grid: Grid) -> list[int]:
        """The Flower ids this round trains (see :func:`select_targets`)."""
        now = self.clock()
        online = list(grid.get_node_ids())
        for nid in online:
            self.first_seen.setdefault(nid, now)
        return select_targets(online, self.members, self.first_seen, now, self.unclaimed_grace)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """flwr's configure_train over the targets only; every message gets the TTL."""
        targets = TargetGrid(grid, self.targets(grid)).as_grid()
        with quiet_flwr():  # flwr logs a line per call: every idle poll
            messages = list(super().configure_train(server_round, arrays, config, targets))
        for message in messages:
            if self.message_ttl is not None:
                message.metadata.ttl = self.message_ttl
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """flwr's aggregate of the usable replies; (None, None) if none."""
        usable = []
        for msg in replies:
            content = valid_content(msg, self.spec)
            if content is not None:
                usable.append(make_message(msg.metadata, content))
        if not usable:
            return None, None
        with quiet_flwr():
            arrays, metrics = super().aggregate_train(server_round, usable)
        if arrays is None or self.spec is None:
            return arrays, metrics
        cast = [
            a.astype(p.dtype, copy=False)
            for a, p in zip(arrays.to_numpy_ndarrays(), self.spec.params, strict=True)
        ]
        return ArrayRecord(cast), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """No evaluation round: members score the received model in their TRAIN reply."""
        return []


class LiveFedAvg(LiveMembers, FedAvg):
    """flwr's FedAvg over the live members."""


class LiveFedProx(LiveMembers, FedProx):
    """flwr's FedProx over the live members (sends ``proximal-mu``)."""


class LiveFedAdam(LiveMembers, FedAdam):
    """flwr's FedAdam over the live members."""


class LiveFedYogi(LiveMembers, FedYogi):
    """flwr's FedYogi over the live members."""


class LiveFedAdagrad(LiveMembers, FedAdagrad):
    """flwr's FedAdagrad over the live members."""


_LIVE: dict[str, type[LiveMembers]] = {
    "FedAvg": LiveFedAvg,
    "FedProx": LiveFedProx,
    "FedAdam": LiveFedAdam,
    "FedYogi": LiveFedYogi,
    "FedAdagrad": LiveFedAdagrad,
}


def group_strategy(
    config: StrategyConfig,
    *,
    unclaimed_grace: float,
    spec: ModelSpec | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LiveMembers:
    """The group's flwr strategy over its live members, with the strategy's parameters."""
    cls = _LIVE[config.flwr_class_name]
    return cls(unclaimed_grace=unclaimed_grace, spec=spec, clock=clock, **config.flwr_kwargs())
