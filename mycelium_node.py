"""The Mycelium Net node agent: one long-lived process per learner.

It registers with the registry, warms up on its own data, probes the live groups'
models on its own validation split, joins the best one (or founds a group), trains in
it through a ``flower-supernode`` child, heartbeats, and migrates when another group
serves its data clearly better. The decision itself is :func:`mycelium.learning.policy.decide`,
the same pure function the simulation uses.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from mycelium.client import (
    Conflict,
    NodeCredentials,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
)
from mycelium.flower.protocol import TRAINER_URL
from mycelium.learning import policy
from mycelium.procs import ManagedProcess, port_is_open

if TYPE_CHECKING:  # torch and flwr are imported only when the agent runs
    import numpy as np

    from mycelium.flower.group_host import GroupHost
    from mycelium.flower.supernode import SuperNode
    from mycelium.flower.trainer import LocalTrainer
    from mycelium.flower.trainer_http import TrainerServer
    from mycelium.learning.data import ClientData

logger = logging.getLogger(__name__)
T = TypeVar("T")

Clock = Callable[[], float]

DEFAULT_REGISTRY_URL = "http://localhost:8000"
MAX_BACKOFF_S = 30.0
LOOP_TICK_S = 0.5
STATUS_FILE = "status.json"
REHOME_RETRY_S = 3.0


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node agent needs; each field is also a ``node`` CLI option."""

    name: str
    registry_url: str = DEFAULT_REGISTRY_URL
    node_address: str | None = None
    task: str = "digits"
    # Data: a slice of a clustered digits scenario, or the user's own .npz (x, y).
    scenario: str = "rotate"
    clusters: int = 3
    cluster: int = 0
    partition_index: int = 0
    partition_count: int = 6
    seed: int = 0
    data_path: Path | None = None
    # Timing.
    heartbeat_interval: float = 30.0
    group_evaluation_interval: float = 60.0
    cooldown: float = 120.0
    warmup_epochs: int = 20
    # Policy and the group this node founds when none fits.
    performance_threshold: float = 0.05
    max_capacity: int = 10
    join_policy: str = "open"
    invite_code: str | None = None
    join_group: int | None = None
    max_candidates: int = 8
    # Where the node keeps its Flower homes and logs.
    work_dir: Path = field(default_factory=lambda: Path("runs") / "node")
    group_run_config: dict[str, str | int | float] = field(default_factory=dict)


@dataclass
class _Membership:
    """The group this node trains in, and its SuperNode child."""

    group_id: int
    fleet_address: str
    supernode: SuperNode


class NodeAgent:
    """The node's life: register, warm up, place itself, train, heartbeat, migrate, leave."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        registry: RegistryClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry or RegistryClient(config.registry_url)
        self.clock = clock
        self.stop_event = threading.Event()
        self.credentials: NodeCredentials | None = None
        self.membership: _Membership | None = None
        self.hosted: GroupHost | None = None
        self.last_move_at: float | None = None
        self.penalty = 0.0
        self.moves = 0
        self.started_at = clock()
        self._last_evaluation = -REHOME_RETRY_S
        self._last_logged_round: int | None = None
        self.trainer: LocalTrainer | None = None
        self.data: ClientData | None = None
        self.trainer_server: TrainerServer | None = None
        self.trainer_url = ""
        self.local_test_accuracy: float | None = None

    # ------------------------------------------------------------------ life cycle
    def run(self) -> int:
        """Run until stopped by :meth:`stop` or a signal; always cleans up. Returns 0."""
        try:
            self._start_trainer()
            self._register()
            if self.stop_event.is_set():
                return 0
            self._warm_up()
            self._place_initially()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        def _handler(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s: leaving the network", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)

    # ------------------------------------------------------------------ start-up
    def _start_trainer(self) -> None:
        from mycelium.flower.trainer import LocalTrainer
        from mycelium.flower.trainer_http import TrainerServer

        data = load_node_data(self.config)
        self.data = data
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        self.trainer = LocalTrainer(data, seed=self.config.seed)
        self.trainer_server = TrainerServer(self.trainer)
        self.trainer_url = self.trainer_server.start()

    def _register(self) -> None:
        assert self.trainer is not None
        cfg, num_samples = self.config, self.trainer.num_examples
        self.credentials = self._retry(
            "register",
            lambda: self.registry.register_node(
                name=cfg.name,
                num_samples=num_samples,
                task=cfg.task,
                address=cfg.node_address,
            ),
        )
        if self.credentials is not None:
            logger.info("registered as node %s (%s)", self.credentials.node_id, cfg.name)

    def _warm_up(self) -> None:
        assert self.trainer is not None
        self.trainer.warm_up(self.config.warmup_epochs)
        self.local_test_accuracy = self._test_accuracy(self.trainer.local_arrays())
        self.started_at = self.clock()  # the policy's warm-up is these local epochs
        logger.info("warmed up: local-only accuracy %.3f", self.trainer.local_score())

    def _place_initially(self) -> None:
        forced = self.config.join_group
        if forced is None:
            self._evaluate_and_act()
            return
        group = self._safe(lambda: self.registry.get_group(forced))
        if group is None:
            logger.warning("group %s from --join is not available; choosing by probe", forced)
            self._evaluate_and_act()
            return
        # A forced placement is not a move of the policy's: it starts no cooldown.
        self._join(group, reason="--join override", invite=self.config.invite_code, move=False)

    # ------------------------------------------------------------------ main loop
    def _loop(self) -> None:
        next_heartbeat = self.clock()
        next_evaluation = self.clock() + self.config.group_evaluation_interval
        while not self.stop_event.is_set():
            now = self.clock()
            self._log_round_progress()
            self._check_supernode()
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.config.heartbeat_interval
            if now >= next_evaluation or self._needs_home(now):
                self._last_evaluation = now
                self._evaluate_and_act()
                self._tend_hosted_group()
                next_evaluation = self.clock() + self.config.group_evaluation_interval
            self.stop_event.wait(LOOP_TICK_S)

    def _needs_home(self, now: float) -> bool:
        """Out of schedule: no group, or its SuperLink is gone (rate-limited)."""
        if now - self._last_evaluation < REHOME_RETRY_S:
            return False
        return self.membership is None or self._current_group_failed()

    def _log_round_progress(self) -> None:
        assert self.trainer is not None
        rnd = self.trainer.last_round
        if rnd is not None and rnd != self._last_logged_round and self.membership:
            self._last_logged_round = rnd
            score = self.trainer.group_score
            logger.info(
                "round %s in group %s: group model accuracy on my data %s",
                rnd,
                self.membership.group_id,
                "n/a" if score is None else f"{score:.3f}",
            )

    def _check_supernode(self) -> None:
        """Restart a SuperNode that died on its own (not a migration)."""
        m = self.membership
        if m is None or m.supernode.is_running():
            return
        logger.warning("SuperNode for group %s exited; restarting it", m.group_id)
        self.membership = replace(m, supernode=self._start_supernode(m.fleet_address))
        self._heartbeat()

    def _heartbeat(self) -> None:
        assert self.credentials is not None and self.trainer is not None
        m = self.membership
        score = self.trainer.group_score if m else None
        flower_id = m.supernode.flower_node_id if m else None
        try:
            self.registry.heartbeat(
                self.credentials.node_id,
                group_id=m.group_id if m else None,
                accuracy=score if score is not None else self.trainer.local_score(),
                loss=None,
                num_samples=self.trainer.num_examples,
                round=self.trainer.last_round,
                flower_node_id=flower_id,
            )
        except Conflict as exc:
            self._resync(exc.actual_group_id)
        except RegistryUnavailable as exc:
            logger.warning("registry unreachable, training on: %s", exc)
        except RegistryError as exc:
            logger.warning("heartbeat refused: %s", exc)
        self._write_status()

    def _test_accuracy(self, arrays: list[np.ndarray]) -> float:
        """Accuracy of ``arrays`` on this node's own test split."""
        from mycelium.learning import model as model_lib

        assert self.data is not None
        net = model_lib.create_model(self.config.seed)
        model_lib.set_weights(net, arrays)
        return model_lib.evaluate(net, self.data.x_test, self.data.y_test)[1]

    def _write_status(self) -> None:
        """status.json in the work dir: local-only vs group model on own val and test data."""
        assert self.trainer is not None
        group_arrays = self.trainer.last_group_arrays if self.membership else None
        status = {
            "name": self.config.name,
            "node_id": self.credentials.node_id if self.credentials else None,
            "group_id": self.membership.group_id if self.membership else None,
            "local_val_accuracy": self.trainer.local_score(),
            "local_test_accuracy": self.local_test_accuracy,
            "group_val_accuracy": self.trainer.group_score,
            "group_test_accuracy": (
                self._test_accuracy(group_arrays) if group_arrays is not None else None
            ),
            "round": self.trainer.last_round,
            "moves": self.moves,
            "hosting_group_id": self.hosted.group_id if self.hosted else None,
        }
        path = self.config.work_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(path)

    def _resync(self, actual_group_id: int | None) -> None:
        """The registry holds a different group for us: follow the registry."""
        logger.warning("registry says group %s, resynchronising", actual_group_id)
        self._stop_supernode()
        if actual_group_id is not None:
            group = self._safe(lambda: self.registry.get_group(actual_group_id))
            if group is not None:
                self._attach(group)

    # ------------------------------------------------------------------ decisions
    def _current_group_failed(self) -> bool:
        m = self.membership
        if m is None or superlink_reachable(m.fleet_address):
            return False
        logger.warning("SuperLink of group %s unreachable", m.group_id)
        return True

    def _evaluate_and_act(self) -> None:
        if self.credentials is None:
            return
        groups = self._safe(lambda: self.registry.list_groups(task=self.config.task, limit=100))
        if groups is None:
            return  # registry down: keep training where we are
        decision, state = self._decide(groups)
        logger.debug("decision: %s", decision)
        by_id = {g["group_id"]: g for g in groups}
        if decision.action == "found":
            # Re-forming after our group vanished keeps what that group had learned.
            vanished = state.current_group_id is not None and state.current_score is None
            self._found_group(decision, reform=vanished)
        elif decision.action in ("join", "migrate") and decision.group_id in by_id:
            target = by_id[decision.group_id]
            if self.membership is None:
                self._join(target, reason=decision.reason, invite=self.config.invite_code)
            else:
                self._migrate(target, decision)

    def _decide(self, groups: list[dict]) -> tuple[policy.Decision, policy.NodeState]:
        current_id = self.membership.group_id if self.membership else None
        candidates, current_score = self._probe(groups, current_id)
        state = self._node_state(current_id, current_score)
        return policy.decide(state, candidates, self._policy_config(), self.clock()), state

    def _node_state(self, current_id: int | None, current_score: float | None) -> policy.NodeState:
        assert self.trainer is not None
        return policy.NodeState(
            current_group_id=current_id,
            current_score=current_score,
            local_score=self.trainer.local_score(),
            last_move_at=self.last_move_at,
            started_at=self.started_at,
            penalty=self.penalty,
            # Differences smaller than this split's sampling noise are not evidence.
            val_size=len(self.data.y_val) if self.data is not None else None,
        )

    def _policy_config(self) -> policy.PolicyConfig:
        return policy.PolicyConfig(
            performance_threshold=self.config.performance_threshold,
            cooldown_s=self.config.cooldown,
            warmup_s=0.0,  # the agent warms up with local epochs before its first decision
        )

    def _probe(
        self, groups: list[dict], current_id: int | None
    ) -> tuple[list[policy.Candidate], float | None]:
        """Score live groups' models on our own validation data (current group included)."""
        from mycelium.learning.codec import bytes_to_weights

        assert self.trainer is not None
        # A group whose SuperLink does not answer cannot train us, whatever the registry says.
        live = [
            g
            for g in groups
            if g.get("alive", True)
            and g.get("has_model")
            and superlink_reachable(g["fleet_address"])
        ]
        others = [g for g in live if g["group_id"] != current_id][: self.config.max_candidates]
        current = [g for g in live if g["group_id"] == current_id]
        candidates: list[policy.Candidate] = []
        current_score: float | None = None
        for group in current + others:
            blob = self._fetch_model(group["group_id"])
            if blob is None:
                continue
            _, accuracy = self.trainer.evaluate_arrays(bytes_to_weights(blob))
            if group["group_id"] == current_id:
                current_score = accuracy
            candidates.append(
                policy.Candidate(
                    group_id=group["group_id"],
                    score=accuracy,
                    size=int(group["num_members"]),
                    capacity=int(group["max_capacity"]),
                    join_policy=group["join_policy"],
                    invite_ok=self.config.invite_code is not None,
                )
            )
        return candidates, current_score

    def _fetch_model(self, group_id: int) -> bytes | None:
        try:
            return self.registry.get_model(group_id)
        except RegistryError as exc:
            logger.warning("could not download group %s's model: %s", group_id, exc)
            return None

    # ------------------------------------------------------------------ actions
    def _join(self, group: dict, *, reason: str, invite: str | None, move: bool = True) -> None:
        assert self.credentials is not None
        try:
            self.registry.join_group(
                group["group_id"], self.credentials.node_id, invite_code=invite
            )
        except RegistryError as exc:
            logger.warning("could not join group %s: %s", group["group_id"], exc)
            return
        if move:
            self._record_move(group["group_id"])
        self._attach(group)
        logger.info("joined group %s (%s): %s", group["group_id"], group["name"], reason)

    def _migrate(self, target: dict, decision: policy.Decision) -> None:
        assert self.credentials is not None and self.membership is not None
        source = self.membership.group_id
        try:
            self.registry.migrate(
                self.credentials.node_id,
                to_group_id=target["group_id"],
                reason=decision.reason,
                expected_gain=decision.expected_gain,
                invite_code=self.config.invite_code,
            )
        except RegistryError as exc:
            logger.warning("migration to group %s refused: %s", target["group_id"], exc)
            return
        self._stop_supernode()
        self._record_move(target["group_id"])
        self._attach(target)
        logger.info(
            "migrated from group %s to group %s, expected gain %+.3f (%s)",
            source,
            target["group_id"],
            decision.expected_gain,
            decision.reason,
        )

    def _found_group(self, decision: policy.Decision, *, reform: bool) -> None:
        from mycelium.flower.group_host import GroupHost

        if self.hosted is not None:
            return  # already hosting one: the policy will join it once it has a model
        cfg = self.config
        host = GroupHost(
            cfg.registry_url,
            name=f"{cfg.name}-group",
            task=cfg.task,
            max_capacity=cfg.max_capacity,
            join_policy=cfg.join_policy,
            performance_threshold=cfg.performance_threshold,
            work_dir=cfg.work_dir / "group",
            seed_model=self._seed_model(reform=reform),
            run_config=cfg.group_run_config or None,
            node_token=self.credentials.token if self.credentials else None,
        )
        try:
            creds = host.start()
        except Exception as exc:  # noqa: BLE001 - any failure to found leaves us unplaced
            logger.warning("could not found a group: %s", exc)
            host.stop()
            return
        self.hosted = host
        logger.info("founded group %s (%s)", creds.group_id, decision.reason)
        group = self._safe(lambda: self.registry.get_group(creds.group_id))
        if group is None:
            return
        if self.membership is None:
            self._join(group, reason="founder", invite=creds.invite_code)
        else:
            self._migrate(group, replace(decision, group_id=creds.group_id))

    def _seed_model(self, *, reform: bool) -> bytes:
        """A group re-formed after its group failed starts from that group's last model;
        a new group starts from this node's warmed-up local model."""
        from mycelium.learning.codec import weights_to_bytes

        assert self.trainer is not None
        arrays = self.trainer.last_group_arrays if reform else None
        return weights_to_bytes(arrays if arrays is not None else self.trainer.local_arrays())

    def _tend_hosted_group(self) -> None:
        """Keep hosting while the group has live members; stop when it is empty."""
        gid = self.hosted.group_id if self.hosted else None
        if self.hosted is None or gid is None:
            return
        group = self._safe(lambda: self.registry.get_group(gid))
        if group is None:
            return
        mine = self.membership is not None and self.membership.group_id == gid
        if not mine and group.get("num_members", 0) == 0:
            logger.info("hosted group %s has no live member: stopping it", gid)
            self.hosted.stop()
            self.hosted = None

    def _attach(self, group: dict) -> None:
        supernode = self._start_supernode(group["fleet_address"])
        self.membership = _Membership(
            group_id=group["group_id"],
            fleet_address=group["fleet_address"],
            supernode=supernode,
        )
        self._heartbeat()

    def _start_supernode(self, fleet_address: str) -> SuperNode:
        from mycelium.flower.errors import ChildExited
        from mycelium.flower.supernode import SuperNode

        assert self.credentials is not None
        supernode = SuperNode(
            superlink_address=fleet_address,
            node_config={TRAINER_URL: self.trainer_url},
            work_dir=self.config.work_dir / "supernode",
            name=self.config.name,
        )
        supernode.start()
        try:
            flower_id = supernode.wait_connected(timeout=30)
            logger.debug("SuperNode connected as Flower node %s", flower_id)
        except (TimeoutError, ChildExited) as exc:
            logger.warning("SuperNode did not connect to %s: %s", fleet_address, exc)
        return supernode

    def _stop_supernode(self) -> None:
        if self.membership is not None:
            self.membership.supernode.stop()
            self.membership = None

    def _record_move(self, group_id: int) -> None:
        moved = policy.record_move(
            self._node_state(None, None), group_id, None, self._policy_config(), self.clock()
        )
        self.last_move_at, self.penalty = moved.last_move_at, moved.penalty
        self.moves += 1

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        try:
            self._leave_network()
        finally:
            self._stop_supernode()
            if self.hosted is not None:
                self.hosted.stop()
            if self.trainer_server is not None:
                self.trainer_server.stop()
            self.registry.close()

    def _leave_network(self) -> None:
        if self.credentials is None:
            return
        node_id = self.credentials.node_id
        if self.membership is not None:
            gid = self.membership.group_id
            if self._safe(lambda: self.registry.leave_group(gid, node_id)) is not None:
                logger.info("left group %s", gid)
        try:
            self.registry.delete_node(node_id)
        except RegistryError as exc:
            logger.warning("could not deregister: %s", exc)
        else:
            logger.info("deregistered node %s", node_id)

    # ------------------------------------------------------------------ helpers
    def _safe(self, call: Callable[[], T]) -> T | None:
        """Run a registry call; log and return None when it fails."""
        try:
            return call()
        except RegistryError as exc:
            logger.warning("registry call failed: %s", exc)
            return None

    def _retry(self, what: str, call: Callable[[], T]) -> T | None:
        """Retry a registry call with exponential backoff while the registry is down."""
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                return call()
            except RegistryUnavailable as exc:
                logger.warning(
                    "%s: registry unreachable (%s); retrying in %.0fs", what, exc, backoff
                )
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        return None


def superlink_reachable(fleet_address: str) -> bool:
    """A TCP connect to the group's SuperLink (host:port) succeeds."""
    host, _, port = fleet_address.rpartition(":")
    try:
        return port_is_open(int(port), host or "127.0.0.1")
    except ValueError:
        return False


def load_node_data(config: NodeConfig) -> ClientData:
    """The node's own data: the user's .npz or its slice of a clustered digits scenario."""
    from mycelium.learning import data

    if config.data_path is not None:
        return data.load_npz(config.data_path, seed=config.seed)
    return data.make_partition(
        scenario=config.scenario,
        clusters=config.clusters,
        cluster=config.cluster,
        index=config.partition_index,
        num_clients=config.partition_count,
        seed=config.seed,
    )


ENTRYPOINT = Path(__file__).resolve().parent / "mycelium_net.py"


def node_command(**options: str | int | float | Path | None) -> list[str]:
    """argv of ``python mycelium_net.py node`` with each keyword as ``--key-name value``
    (``None`` values left out), for the demo, benchmarks and tests that start agents."""
    args = [sys.executable, str(ENTRYPOINT), "node"]
    for key, value in options.items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


# Timers that let tests and benchmarks see a whole node life in about a minute.
FAST_TIMERS: dict[str, float] = {
    "heartbeat_interval": 1,
    "group_evaluation_interval": 4,
    "cooldown": 8,
}


@contextmanager
def agent_process(
    work_dir: Path, *, name: str, stop_timeout: float = 30.0, **options: str | int | float | None
) -> Iterator[ManagedProcess]:
    """Run ``mycelium_net.py node --name NAME --work-dir WORK_DIR/NAME ...options`` as a child
    process (log in ``WORK_DIR/NAME.log``); SIGTERM it, and wait, on exit."""
    args = node_command(name=name, work_dir=work_dir / name, **options)
    proc = ManagedProcess(name, args, log_path=work_dir / f"{name}.log").start()
    try:
        yield proc
    finally:
        proc.stop(timeout=stop_timeout)


def run_node(config: NodeConfig) -> int:
    """Entry point of ``mycelium_net.py node``: run an agent until SIGINT/SIGTERM."""
    agent = NodeAgent(config)
    agent.install_signal_handlers()
    return agent.run()
