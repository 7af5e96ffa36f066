"""ServerApp of a Mycelium Net group: open-ended FedAvg rounds over the group's live members.

No torch here (numpy only). Each round:

1. read the group from the registry (members, liveness, their Flower node ids);
2. targets = online Flower ids claimed by LIVE members, plus online ids nobody claimed yet
   (a node that just started its SuperNode) for ``unclaimed-grace`` seconds; never the ids
   of dead members, so a killed node does not stall a round for Flower's ~50 s detection;
3. send TRAIN messages (TTL = round timeout, so stale messages expire instead of piling
   up) and wait up to an adaptive timeout ``max(min, factor x median of recent rounds)``;
4. FedAvg weighted by ``num-examples`` (flwr's own aggregation helpers), then PUT the model
   and POST the round to the registry. The round's accuracy/loss are the members'
   ``val_accuracy``/``val_loss`` of the model they RECEIVED, weighted by examples: the
   accuracy reported for round r is that of the model aggregated in round r-1 (one-round lag).

The loop ends when stopped (``flwr stop``), when ``num-rounds`` > 0 rounds are done, or
when the registry says the group failed/dissolved. Registry outages are logged and retried
next round; training goes on. The initial model is the registry's model for the group if
it has one (a restarted or re-formed group resumes), else :func:`initial_arrays`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from mycelium.client import NotFound, RegistryClient, RegistryError
from mycelium.learning import codec
from mycelium_flower.protocol import (
    ACCURACY_KEY,
    ARRAYS_KEY,
    CONFIG_KEY,
    LOSS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    ROUND_KEY,
)

logger = logging.getLogger(__name__)


# Shapes of mycelium.learning.model's MLP 64-64-10 in get_weights order (torch Linear: weight is
# (out, in)). Defined here so the ServerApp needs no torch; a test checks they match.
MODEL_SHAPES: tuple[tuple[int, ...], ...] = ((64, 64), (64,), (10, 64), (10,))

# Run config keys (defaults in flower_app/pyproject.toml).
REGISTRY_URL = "registry-url"
GROUP_ID = "group-id"
GROUP_TOKEN = "group-token"
LOCAL_EPOCHS = "local-epochs"
LR = "lr"
BATCH_SIZE = "batch-size"
NUM_ROUNDS = "num-rounds"
MIN_ROUND_TIMEOUT = "min-round-timeout"
FIRST_ROUND_TIMEOUT = "first-round-timeout"
TIMEOUT_FACTOR = "timeout-factor"
IDLE_POLL = "idle-poll"
UNCLAIMED_GRACE = "unclaimed-grace"
INIT_SEED = "init-seed"
REGISTRY_TIMEOUT = "registry-timeout"
REPLY_POLL = "reply-poll"

MAX_ROUND_TIMEOUT = 900.0
TERMINAL_STATUSES = frozenset({"failed", "dissolved"})


@dataclass(frozen=True)
class Settings:
    """The run config, typed (defaults = flower_app/pyproject.toml's, checked by a test)."""

    registry_url: str = ""
    group_id: int = 0
    group_token: str = ""
    local_epochs: int = -1  # < 0: the member's default (mycelium.learning.model's constants)
    lr: float = -1.0
    batch_size: int = -1
    num_rounds: int = 0
    min_round_timeout: float = 30.0
    first_round_timeout: float = 120.0
    timeout_factor: float = 3.0
    idle_poll: float = 1.0
    unclaimed_grace: float = 30.0
    init_seed: int = 0
    registry_timeout: float = 5.0
    reply_poll: float = 0.25

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> Settings:
        d = cls()
        return cls(
            registry_url=str(cfg.get(REGISTRY_URL, d.registry_url)),
            group_id=int(cfg.get(GROUP_ID, d.group_id)),
            group_token=str(cfg.get(GROUP_TOKEN, d.group_token)),
            local_epochs=int(cfg.get(LOCAL_EPOCHS, d.local_epochs)),
            lr=float(cfg.get(LR, d.lr)),
            batch_size=int(cfg.get(BATCH_SIZE, d.batch_size)),
            num_rounds=int(cfg.get(NUM_ROUNDS, d.num_rounds)),
            min_round_timeout=float(cfg.get(MIN_ROUND_TIMEOUT, d.min_round_timeout)),
            first_round_timeout=float(cfg.get(FIRST_ROUND_TIMEOUT, d.first_round_timeout)),
            timeout_factor=float(cfg.get(TIMEOUT_FACTOR, d.timeout_factor)),
            idle_poll=float(cfg.get(IDLE_POLL, d.idle_poll)),
            unclaimed_grace=float(cfg.get(UNCLAIMED_GRACE, d.unclaimed_grace)),
            init_seed=int(cfg.get(INIT_SEED, d.init_seed)),
            registry_timeout=float(cfg.get(REGISTRY_TIMEOUT, d.registry_timeout)),
            reply_poll=float(cfg.get(REPLY_POLL, d.reply_poll)),
        )

    def train_config(self, server_round: int) -> ConfigRecord:
        """The round number plus the hyper-parameters the group sets (>= 0)."""
        config: dict[str, int | float] = {ROUND_KEY: server_round}
        hyper = {LOCAL_EPOCHS: self.local_epochs, LR: self.lr, BATCH_SIZE: self.batch_size}
        config.update({k: v for k, v in hyper.items() if v >= 0})
        return ConfigRecord(config)


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


class RoundTimer:
    """Adaptive round timeout: ``max(min, factor x median of the last complete rounds)``.

    Before any complete round it is ``first``; a round with no reply at all doubles the
    current timeout (up to :data:`MAX_ROUND_TIMEOUT`) so that a too-short timeout cannot
    livelock the group.
    """

    def __init__(self, *, minimum: float, first: float, factor: float, window: int = 5) -> None:
        self._minimum = minimum
        self._factor = factor
        self._current = max(minimum, first)
        self._recent: deque[float] = deque(maxlen=window)

    @property
    def timeout(self) -> float:
        return self._current

    def observe(self, duration: float, *, replies: int, expected: int) -> None:
        if expected and replies == expected:
            self._recent.append(duration)
            median = statistics.median(self._recent)
            self._current = min(MAX_ROUND_TIMEOUT, max(self._minimum, self._factor * median))
        elif replies == 0:
            self._current = min(MAX_ROUND_TIMEOUT, self._current * 2)


@dataclass(frozen=True)
class RoundOutcome:
    """Aggregate of one round's valid replies."""

    arrays: list[np.ndarray]
    accuracy: float
    loss: float
    num_nodes: int
    num_examples: int


def _valid_content(msg: Message, shapes: Sequence[tuple[int, ...]]) -> RecordDict | None:
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
    # Keep only the two records the aggregation helpers expect.
    return RecordDict({ARRAYS_KEY: content.array_records[ARRAYS_KEY], METRICS_KEY: metrics})


def aggregate(replies: Iterable[Message], shapes: Sequence[tuple[int, ...]]) -> RoundOutcome | None:
    """FedAvg of the valid replies weighted by num-examples (flwr's helpers)."""
    contents = [c for c in (_valid_content(m, shapes) for m in replies) if c is not None]
    if not contents:
        return None
    arrays = aggregate_arrayrecords(contents, NUM_EXAMPLES_KEY).to_numpy_ndarrays()
    metrics = aggregate_metricrecords(contents, NUM_EXAMPLES_KEY)
    examples = sum(int(c.metric_records[METRICS_KEY][NUM_EXAMPLES_KEY]) for c in contents)
    return RoundOutcome(
        arrays=[a.astype(np.float32) for a in arrays],
        accuracy=min(1.0, max(0.0, float(metrics[ACCURACY_KEY]))),
        loss=max(0.0, float(metrics[LOSS_KEY])),
        num_nodes=len(contents),
        num_examples=examples,
    )


class GroupRegistry:
    """The registry as the ServerApp sees it: every failure is logged, never raised."""

    def __init__(self, settings: Settings) -> None:
        self._gid = settings.group_id
        self._client: RegistryClient | None = None
        if settings.registry_url:
            self._client = RegistryClient(
                settings.registry_url,
                token=settings.group_token or None,
                timeout=settings.registry_timeout,
            )

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


def _start_point(
    registry: GroupRegistry, group: Mapping[str, Any] | None, seed: int
) -> tuple[list[np.ndarray], int]:
    arrays = registry.model()
    if arrays is not None and [a.shape for a in arrays] == list(MODEL_SHAPES):
        last = (group or {}).get("round")
        start = int(last) + 1 if isinstance(last, int) else 1
        logger.info("resuming from the registry's model at round %s", start)
        return [a.astype(np.float32) for a in arrays], start
    if arrays is not None:
        logger.warning("registry model has the wrong shapes; starting fresh")
    return initial_arrays(seed), 1


def send_and_receive(
    grid: Grid,
    messages: Sequence[Message],
    *,
    timeout: float,
    poll: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Message]:
    """Like ``Grid.send_and_receive`` but pulls replies every ``poll`` seconds instead of
    Flower's fixed 3 s, which alone adds ~1.5 s to every round."""
    pending = {mid for mid in grid.push_messages(messages) if mid}
    deadline = clock() + timeout
    replies: list[Message] = []
    while pending:
        pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        pending.difference_update(m.metadata.reply_to_message_id for m in pulled)
        if not pending or clock() >= deadline:
            break
        sleep(poll)
    return replies


class RoundLoop:
    """The open-ended round loop; ``clock``/``sleep`` are injected for tests."""

    def __init__(
        self,
        grid: Grid,
        settings: Settings,
        registry: GroupRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.grid = grid
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.sleep = sleep
        self.timer = RoundTimer(
            minimum=settings.min_round_timeout,
            first=settings.first_round_timeout,
            factor=settings.timeout_factor,
        )
        self.first_seen: dict[int, float] = {}
        self.members: list[dict[str, Any]] | None = None

    def run(self) -> None:
        group = self.registry.group()
        arrays, server_round = _start_point(self.registry, group, self.settings.init_seed)
        done = 0
        while self.settings.num_rounds <= 0 or done < self.settings.num_rounds:
            if group is not None:
                if group.get("status") in TERMINAL_STATUSES:
                    logger.info("group %s is %s: stopping", self.settings.group_id, group["status"])
                    return
                self.members = list(group.get("members", []))
            targets = self._targets()
            if not targets:
                self.sleep(self.settings.idle_poll)
            else:
                outcome = self._round(server_round, arrays, targets)
                if outcome is not None:
                    arrays = outcome.arrays
                    self.registry.publish(server_round, outcome)
                    server_round += 1
                    done += 1
            group = self.registry.group()

    def _targets(self) -> list[int]:
        now = self.clock()
        online = list(self.grid.get_node_ids())
        for nid in online:
            self.first_seen.setdefault(nid, now)
        return select_targets(
            online, self.members, self.first_seen, now, self.settings.unclaimed_grace
        )

    def _round(
        self, server_round: int, arrays: list[np.ndarray], targets: list[int]
    ) -> RoundOutcome | None:
        timeout = self.timer.timeout
        content = RecordDict(
            {ARRAYS_KEY: ArrayRecord(arrays), CONFIG_KEY: self.settings.train_config(server_round)}
        )
        messages = [
            Message(content, dst_node_id=nid, message_type=MessageType.TRAIN, ttl=timeout)
            for nid in targets
        ]
        started = self.clock()
        replies = send_and_receive(
            self.grid,
            messages,
            timeout=timeout,
            poll=self.settings.reply_poll,
            clock=self.clock,
            sleep=self.sleep,
        )
        duration = self.clock() - started
        outcome = aggregate(replies, MODEL_SHAPES)
        got = outcome.num_nodes if outcome else 0
        self.timer.observe(duration, replies=got, expected=len(targets))
        if outcome is None:
            logger.warning(
                "round %s: no usable reply from %s node(s) in %.1fs (timeout %.0fs)",
                server_round,
                len(targets),
                duration,
                timeout,
            )
            return None
        logger.info(
            "round %s: %s/%s nodes, %s examples, accuracy %.4f, loss %.4f, %.1fs",
            server_round,
            got,
            len(targets),
            outcome.num_examples,
            outcome.accuracy,
            outcome.loss,
            duration,
        )
        return outcome


app = ServerApp()


def _setup_logging() -> None:
    """One INFO line per round from this package; silence per-request HTTP logs."""
    package = logging.getLogger(__name__.rpartition(".")[0])
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package.propagate = False
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the group's rounds until stopped (see the module docstring)."""
    _setup_logging()
    settings = Settings.from_run_config(context.run_config)
    registry = GroupRegistry(settings)
    try:
        RoundLoop(grid, settings, registry).run()
    finally:
        registry.close()
