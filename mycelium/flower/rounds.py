"""The group's open-ended round loop, driven by the group's run config
(:class:`~mycelium.flower.protocol.RunConfig`).

flwr's ``Strategy.start`` runs a fixed number of rounds with one timeout and Flower's 3 s
reply pull. A group runs until stopped, so :class:`RoundLoop` drives the same strategy
methods (``configure_train`` -> send -> ``aggregate_train``) itself, each round:

1. read the group from the registry (members, liveness, Flower ids); status failed or
   dissolved (or 404) ends the run; registry unreachable: keep the last member list;
2. no target: poll again after ``idle-poll`` s; else send and wait up to an adaptive
   timeout ``max(min, factor x median of recent rounds)`` (:class:`RoundTimer`), pulling
   replies every ``reply-poll`` s;
3. PUT the aggregated model and POST the round. The round's accuracy/loss are the members'
   ``val_accuracy``/``val_loss`` of the model they RECEIVED, weighted by examples: the
   accuracy reported for round r is that of the model aggregated in round r-1.

The loop also ends after ``num-rounds`` > 0 rounds. It starts from the registry's model
(the founder's seed; a restarted or re-formed group resumes) or the ``initial-model`` file,
waiting for one of them; replies are checked against the group's fingerprint (from the
registry, else the starting arrays). The strategy is ``strategy`` (+ its parameters).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.superlink.grid import http_grid

from mycelium.api import GroupDetail
from mycelium.client import RegistryEndpoints
from mycelium.fingerprint import model_spec
from mycelium.flower import protocol as p
from mycelium.flower.group_registry import (
    GroupRegistry,
    RoundOutcome,
    group_spec,
    start_point,
)
from mycelium.flower.protocol import RunConfig
from mycelium.flower.strategy import LiveMembers, group_strategy
from mycelium.learning import codec
from mycelium.learning.strategy import StrategyConfig

logger = logging.getLogger(__name__)

MAX_ROUND_TIMEOUT = 900.0


def train_config(settings: RunConfig, server_round: int) -> ConfigRecord:
    """The round number plus the fit hyper-parameters the group sets."""
    hyper = {p.LOCAL_EPOCHS: settings.local_epochs, p.LR: settings.lr}
    hyper[p.BATCH_SIZE] = settings.batch_size
    given = {k: v for k, v in hyper.items() if v is not None}
    return ConfigRecord({p.ROUND_KEY: server_round, **given})


def given_arrays(settings: RunConfig) -> list[np.ndarray] | None:
    """The ``initial-model`` arrays, or None (ValueError if the file is unreadable)."""
    if not settings.initial_model:
        return None
    try:
        with open(settings.initial_model, "rb") as f:
            return codec.bytes_to_weights(f.read())
    except OSError as exc:
        raise ValueError(f"initial-model {settings.initial_model}: {exc.strerror}") from None


def group_token(settings: RunConfig) -> str | None:
    """The token in ``group-token-file`` (None without one; unreadable: logged)."""
    if not settings.group_token_file:
        return None
    try:
        return Path(settings.group_token_file).read_text().strip() or None
    except OSError as exc:
        logger.error("group token file %s unreadable: %s", settings.group_token_file, exc)
        return None


def open_registry(settings: RunConfig) -> GroupRegistry:
    """The group's registry view (no-op without ``registry-url``; several URLs: the
    ServerApp fails over between them like every client)."""
    registry = RegistryEndpoints.parse(settings.registry_url) if settings.registry_url else None
    return GroupRegistry(
        registry,
        settings.group_id,
        token=group_token(settings),
        timeout=settings.registry_timeout,
        ca_file=settings.registry_ca or None,
    )


def build_strategy(settings: RunConfig) -> LiveMembers:
    """The group's flwr strategy; logs what it holds, read back from flwr's instance."""
    strategy = group_strategy(settings.strategy, unclaimed_grace=settings.unclaimed_grace)
    logger.info("strategy %s", StrategyConfig.of_flwr(strategy).describe())
    return strategy


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


@contextmanager
def objects_pulled_within(seconds: float) -> Iterator[None]:
    """Flower's ``HttpGrid.pull_messages`` fetches each reply's objects with retries for up
    to two hours (``PULL_MAX_TIME``, backoff up to 10 s). A member cut from its group half-way
    through pushing a reply (its message pushed, 2 of its 12 objects) left a reply whose
    objects never come, and the group's round waited on it for three minutes (chaos soak,
    seed 1, group_cut). Within this block those pulls give up after ``seconds``: the reply
    becomes Flower's error message, which the loop skips like any failed reply."""
    original = http_grid.pull_objects
    http_grid.pull_objects = partial(original, max_time=seconds)
    try:
        yield
    finally:
        http_grid.pull_objects = original


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
        with objects_pulled_within(max(1.0, deadline - clock())):
            pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        pending.difference_update(m.metadata.reply_to_message_id for m in pulled)
        if not pending or clock() >= deadline:
            break
        sleep(poll)
    return replies


class RoundLoop:
    """The open-ended round loop (see the module docstring); ``clock``/``sleep`` are
    injected for tests."""

    def __init__(
        self,
        grid: Grid,
        strategy: LiveMembers,
        registry: GroupRegistry,
        settings: RunConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.grid = grid
        self.strategy = strategy
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.timer = RoundTimer(
            minimum=settings.min_round_timeout,
            first=settings.first_round_timeout,
            factor=settings.timeout_factor,
        )

    def _start(self) -> tuple[GroupDetail | None, list[np.ndarray], int] | None:
        """Wait for a starting model (see the module docstring); None if the group ended."""
        given = given_arrays(self.settings)
        while True:
            group = self.registry.group()
            if self.registry.ended(group):
                return None
            spec = group_spec(group)
            start = start_point(self.registry, group.round if group else None, spec, given)
            if start is not None:
                arrays, server_round = start
                names = [f"array {i}" for i in range(len(arrays))]
                self.strategy.spec = spec or model_spec(names, arrays)
                return group, arrays, server_round
            logger.info("no starting model yet (registry or initial-model); waiting")
            self.sleep(self.settings.idle_poll)

    def run(self) -> None:
        started = self._start()
        if started is None:
            logger.info("group %s ended before its first round", self.settings.group_id)
            return
        group, arrays, server_round = started
        done = 0
        while self.settings.num_rounds <= 0 or done < self.settings.num_rounds:
            if self.registry.ended(group):
                logger.info("group %s has ended: stopping", self.settings.group_id)
                return
            if group is not None:
                self.strategy.members = list(group.members)
            outcome = self._round(server_round, arrays)
            if outcome is not None:
                arrays = outcome.arrays
                self.registry.publish(server_round, outcome)
                server_round += 1
                done += 1
            group = self.registry.group()

    def _round(self, server_round: int, arrays: list[np.ndarray]) -> RoundOutcome | None:
        """One round; None when nobody was asked (after an idle poll) or nobody answered."""
        timeout = self.timer.timeout
        self.strategy.message_ttl = timeout
        config = train_config(self.settings, server_round)
        messages = self.strategy.configure_train(
            server_round, ArrayRecord(arrays), config, self.grid
        )
        if not messages:
            self.sleep(self.settings.idle_poll)
            return None
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
        agg_arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        # flwr returns both or neither (our round_metrics runs whenever replies aggregate).
        outcome = (
            None
            if agg_arrays is None or metrics is None
            else RoundOutcome.from_records(agg_arrays, metrics)
        )
        got = outcome.num_nodes if outcome else 0
        self.timer.observe(duration, replies=got, expected=len(messages))
        _log_round(server_round, outcome, len(messages), duration, timeout)
        return outcome


def _log_round(
    server_round: int, outcome: RoundOutcome | None, asked: int, duration: float, timeout: float
) -> None:
    if outcome is None:
        logger.warning(
            "round %s: no usable reply from %s node(s) in %.1fs (timeout %.0fs)",
            server_round,
            asked,
            duration,
            timeout,
        )
        return
    logger.info(
        "round %s: %s/%s nodes, %s examples, accuracy %.4f, loss %.4f, %.1fs",
        server_round,
        outcome.num_nodes,
        asked,
        outcome.num_examples,
        outcome.accuracy,
        outcome.loss,
        duration,
    )


def setup_app_logging() -> None:
    """One INFO line per round from our package in the ServerApp's log (``flwr log``);
    no per-request HTTP lines."""
    package = logging.getLogger("mycelium")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package.propagate = False
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
