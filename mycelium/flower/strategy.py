"""The group's strategy: flwr's ``FedAvg`` over the group's LIVE registry members.

Two of FedAvg's methods change:

- :meth:`LiveMembersFedAvg.configure_train` sends TRAIN messages to the online Flower ids
  that live members claimed in the registry, plus ids nobody claimed yet (a node that just
  started its SuperNode) for ``unclaimed_grace`` seconds; never to dead members, so a
  killed node does not stall a round for Flower's ~50 s offline detection. Messages carry
  a TTL (the round timeout) so those of a timed-out round expire at the SuperLink instead
  of piling up on slow nodes.
- :meth:`LiveMembersFedAvg.aggregate_train` drops unusable replies (errors, wrong shapes,
  non-finite values, no examples) one by one instead of failing the whole round as
  FedAvg's consistency check does, then aggregates with flwr's own helpers; the round's
  metrics also count its nodes and examples.

Members score the model they receive on their own validation split inside their TRAIN
reply, so there is no separate evaluation round. numpy only: no torch in the ServerApp.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from mycelium.flower.protocol import (
    ACCURACY_KEY,
    ARRAYS_KEY,
    CONFIG_KEY,
    LOSS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_NODES_KEY,
    ROUND_KEY,
)

logger = logging.getLogger(__name__)

# Shapes of mycelium.learning.model's MLP 64-64-10 in get_weights order (torch Linear: weight is
# (out, in)). Defined here so the ServerApp needs no torch; a test checks they match.
MODEL_SHAPES: tuple[tuple[int, ...], ...] = ((64, 64), (64,), (10, 64), (10,))


def initial_arrays(seed: int) -> list[np.ndarray]:
    """Deterministic numpy init with torch Linear's default bounds (U(+-1/sqrt(fan_in)))."""
    rng = np.random.default_rng(seed)
    arrays: list[np.ndarray] = []
    for shape in MODEL_SHAPES:
        fan_in = shape[1] if len(shape) == 2 else arrays[-1].shape[1]
        bound = 1.0 / math.sqrt(fan_in)
        arrays.append(rng.uniform(-bound, bound, size=shape).astype(np.float32))
    return arrays


def select_targets(
    online: Iterable[int],
    members: Sequence[Mapping[str, Any]] | None,
    first_seen: Mapping[int, float],
    now: float,
    grace: float,
) -> list[int]:
    """Flower ids to train this round (see the module docstring). ``members=None``: no
    registry view yet, so every online node trains."""
    online_ids = sorted(set(online))
    if members is None:
        return online_ids
    claimed = {int(m["flower_node_id"]) for m in members if m.get("flower_node_id") is not None}
    live = {
        int(m["flower_node_id"])
        for m in members
        if m.get("alive") and m.get("flower_node_id") is not None
    }
    return [
        nid
        for nid in online_ids
        if nid in live or (nid not in claimed and now - first_seen.get(nid, now) < grace)
    ]


def valid_content(msg: Message, shapes: Sequence[tuple[int, ...]]) -> RecordDict | None:
    """The reply's content if it is a usable training result, else None (logged)."""
    node = msg.metadata.src_node_id
    if msg.has_error():
        logger.warning("node %s replied with an error: %s", node, msg.error.reason)
        return None
    content = msg.content
    try:
        arrays = content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
        metrics = content.metric_records[METRICS_KEY]
        weight = float(metrics[NUM_EXAMPLES_KEY])
        acc, loss = float(metrics[ACCURACY_KEY]), float(metrics[LOSS_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("node %s sent an incomplete reply: %s", node, exc)
        return None
    if [a.shape for a in arrays] != list(shapes):
        logger.warning("node %s sent arrays of the wrong shapes", node)
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
    metrics[NUM_EXAMPLES_KEY] = sum(
        int(c.metric_records[METRICS_KEY][weighted_by_key]) for c in contents
    )
    return metrics


class LiveMembersFedAvg(FedAvg):
    """FedAvg over the live members the registry lists (see the module docstring).

    The round loop keeps :attr:`members` (the registry's member list, or None before the
    first answer) and :attr:`message_ttl` (its round timeout) current.
    """

    def __init__(
        self,
        *,
        unclaimed_grace: float,
        shapes: Sequence[tuple[int, ...]] = MODEL_SHAPES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            min_train_nodes=0,
            min_available_nodes=0,
            weighted_by_key=NUM_EXAMPLES_KEY,
            arrayrecord_key=ARRAYS_KEY,
            configrecord_key=CONFIG_KEY,
            train_metrics_aggr_fn=round_metrics,
        )
        self.unclaimed_grace = unclaimed_grace
        self.shapes = [tuple(s) for s in shapes]
        self.clock = clock
        self.members: list[dict[str, Any]] | None = None
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
        """One TRAIN message per target, with the round number and a TTL."""
        config[ROUND_KEY] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [
            Message(record, dst_node_id=nid, message_type=MessageType.TRAIN, ttl=self.message_ttl)
            for nid in self.targets(grid)
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg of the usable replies weighted by ``num-examples``; (None, None) if none."""
        contents = [c for c in (valid_content(m, self.shapes) for m in replies) if c is not None]
        if not contents:
            return None, None
        arrays = aggregate_arrayrecords(contents, self.weighted_by_key)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """No evaluation round: members score the received model in their TRAIN reply."""
        return []
