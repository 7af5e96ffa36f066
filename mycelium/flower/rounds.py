"""The group's open-ended round loop, and the run config it reads.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from mycelium.fingerprint import model_spec
from mycelium.flower import protocol as p
from mycelium.flower.group_registry import (
    TERMINAL_STATUSES,
    GroupRegistry,
    RoundOutcome,
    group_spec,
    start_point,
)
from mycelium.flower.strategy import LiveMembers, group_strategy
from mycelium.learning import codec
from mycelium.learning.strategy import StrategyConfig

logger = logging.getLogger(__name__)

MAX_ROUND_TIMEOUT = 900.0


@dataclass(frozen=True)
class Settings:
    """The run config, typed (defaults = flower_app/pyproject.toml's, checked by a test)."""

    registry_url: str = ""
    registry_ca: str = ""
    group_id: int = 0
    group_token_file: str = ""  # the token is read from it on the host, never sent
    local_epochs: int = -1  # < 0: the member's default (mycelium.model's constants)
    lr: float = -1.0
    batch_size: int = -1
    num_rounds: int = 0
    min_round_timeout: float = 30.0
    first_round_timeout: float = 120.0
    timeout_factor: float = 3.0
    idle_poll: float = 1.0
    unclaimed_grace: float = 30.0
    registry_timeout: float = 5.0
    reply_poll: float = 0.25
    strategy: str = "fedavg"
    proximal_mu: float = -1.0  # < 0: the strategy's default
    server_lr: float = -1.0
    tau: float = -1.0
    initial_model: str = ""  # an absolute path to an npz of the starting arrays

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> Settings:
        d = cls()
        return cls(
            registry_url=str(cfg.get(p.REGISTRY_URL, d.registry_url)),
            registry_ca=str(cfg.get(p.REGISTRY_CA, d.registry_ca)),
            group_id=int(cfg.get(p.GROUP_ID, d.group_id)),
            group_token_file=str(cfg.get(p.GROUP_TOKEN_FILE, d.group_token_file)),
            local_epochs=int(cfg.get(p.LOCAL_EPOCHS, d.local_epochs)),
            lr=float(cfg.get(p.LR, d.lr)),
            batch_size=int(cfg.get(p.BATCH_SIZE, d.batch_size)),
            num_rounds=int(cfg.get(p.NUM_ROUNDS, d.num_rounds)),
            min_round_timeout=float(cfg.get(p.MIN_ROUND_TIMEOUT, d.min_round_timeout)),
            first_round_timeout=float(cfg.get(p.FIRST_ROUND_TIMEOUT, d.first_round_timeout)),
            timeout_factor=float(cfg.get(p.TIMEOUT_FACTOR, d.timeout_factor)),
            idle_poll=float(cfg.get(p.IDLE_POLL, d.idle_poll)),
            unclaimed_grace=float(cfg.get(p.UNCLAIMED_GRACE, d.unclaimed_grace)),
            registry_timeout=float(cfg.get(p.REGISTRY_TIMEOUT, d.registry_timeout)),
            reply_poll=float(cfg.get(p.REPLY_POLL, d.reply_poll)),
            strategy=str(cfg.get(p.STRATEGY, d.strategy)),
            proximal_mu=float(cfg.get(p.PROXIMAL_MU, d.proximal_mu)),
            server_lr=float(cfg.get(p.SERVER_LR, d.server_lr)),
            tau=float(cfg.get(p.TAU, d.tau)),
            initial_model=str(cfg.get(p.INITIAL_MODEL, d.initial_model)),
        )

    def strategy_config(self) -> StrategyConfig:
        """The group's strategy (StrategyError if the run config names a bad one)."""
        given = {"proximal_mu": self.proximal_mu, "server_lr": self.server_lr, "tau": self.tau}
        params = {k: v for k, v in given.items() if v >= 0}
        return StrategyConfig.from_params(self.strategy, params)

    def given_arrays(self) -> list[np.ndarray] | None:
        """The ``initial-model`` arrays, or None (ValueError if the file is unreadable)."""
        if not self.initial_model:
            return None
        try:
            with open(self.initial_model, "rb") as f:
                return codec.bytes_to_weights(f.read())
        except OSError as exc:
            raise ValueError(f"initial-model {self.initial_model}: {exc.strerror}") from None

    def build_strategy(self) -> LiveMembers:
        return group_strategy(self.strategy_config(), unclaimed_grace=self.unclaimed_grace)

    def train_config(self, server_round: int) -> ConfigRecord:
        """The round number plus the hyper-parameters the group sets (>= 0)."""
        config: dict[str, int | float] = {p.ROUND_KEY: server_round}
        hyper = {p.LOCAL_EPOCHS: self.local_epochs, p.LR: self.lr, p.BATCH_SIZE: self.batch_size}
        config.update({k: v for k, v in hyper.items() if v >= 0})
        return ConfigRecord(config)

    def group_token(self) -> str | None:
        """The token in :attr:`group_token_file` (None without one; unreadable: logged)."""
        if not self.group_token_file:
            return None
        try:
            return Path(self.group_token_file).read_text().strip() or None
        except OSError as exc:
            logger.error("group token file %s unreadable: %s", self.group_token_file, exc)
            return None

    def registry(self) -> GroupRegistry:
        """The group's registry view (no-op without ``registry-url``)."""
        return GroupRegistry(
            self.registry_url,
            self.group_id,
            token=self.group_token(),
            timeout=self.registry_timeout,
            ca_file=self.registry_ca or None,
        )


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
    """The open-ended round loop (see the module docstring); ``clock``/``sleep`` are
    injected for tests."""

    def __init__(
        self,
        grid: Grid,
        strategy: LiveMembers,
        registry: GroupRegistry,
        settings: Settings,
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

    def _start(self) -> tuple[dict[str, Any] | None, list[np.ndarray], int] | None:
        """Wait for a starting model (see the module docstring); None if the group ended."""
        given = self.settings.given_arrays()
        while True:
            group = self.registry.group()
            if group is not None and group.get("status") in TERMINAL_STATUSES:
                return None
            spec = group_spec(group)
            start = start_point(self.registry, group, spec, given)
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
            if group is not None:
                if group.get("status") in TERMINAL_STATUSES:
                    logger.info("group %s is %s: stopping", self.settings.group_id, group["status"])
                    return
                self.strategy.members = list(group.get("members", []))
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
        config = self.settings.train_config(server_round)
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
        outcome = None if agg_arrays is None else RoundOutcome.from_records(agg_arrays, metrics)
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
