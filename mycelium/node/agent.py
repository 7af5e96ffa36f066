"""The node agent's life: start, loop, act, shut down.

Start (:meth:`NodeAgent.start`, which returns a ready agent): check Flower's executables,
load the data, start the warm trainer and its endpoint, register (retried while the
registry is unreachable), warm up, place itself. Loop (one :meth:`NodeAgent.tick` every
0.5 s of its clock): heartbeat, write ``status.json``, restart a SuperNode that died, and
every ``group_evaluation_interval`` (or at once when it has no group or its group's
SuperLink is gone) probe and decide. Shut down: leave, deregister, stop every child.

Errors that retrying cannot fix raise :class:`FatalNodeError` (after the shutdown of what
was started); what can heal (the registry unreachable, a group that failed to start) is
logged and retried.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING

from mycelium.api import GroupPublic, NodeCreated
from mycelium.client import (
    Backoff,
    Conflict,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
)
from mycelium.config import SEARCH_EVALUATIONS
from mycelium.flower.errors import FlowerNotInstalled
from mycelium.flower.group_host import APP_DIR
from mycelium.flower.procs import flower_executable
from mycelium.learning import policy
from mycelium.net.addresses import is_loopback
from mycelium.net.trust import GroupTrust
from mycelium.node.actions import GroupActions, safe
from mycelium.node.admitted import AppPin
from mycelium.node.config import FatalNodeError, NodeConfig, load_node_data, load_node_task
from mycelium.node.personal import Personaliser, personal_in_group
from mycelium.node.placement import Placement
from mycelium.node.status import StatusReporter

if TYPE_CHECKING:
    from mycelium.flower.group_host import GroupHost
    from mycelium.flower.trainer import LocalTrainer, PersonalScores
    from mycelium.flower.trainer_http import TrainerServer
    from mycelium.node.membership import Membership

logger = logging.getLogger(__name__)
Clock = Callable[[], float]

REGISTER_BACKOFF = Backoff(first=1.0, cap=30.0)  # registration while the registry is away
LOOP_TICK_S = 0.5
REHOME_RETRY_S = 3.0
FLOWER_EXECUTABLES = ("flower-superlink", "flower-supernode", "flwr")


class NodeAgent:
    """A started node: registered, warmed up, placed; it trains, heartbeats, migrates and
    leaves. Made by :meth:`start`; :meth:`run` loops until :meth:`stop` or a signal.

    ``registry`` and ``clock`` are injectable (tests drive :meth:`tick` with a fake clock
    against an in-process registry).
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        registry: RegistryClient,
        trainer: LocalTrainer,
        trainer_server: TrainerServer,
        credentials: NodeCreated,
        pin: AppPin,
        clock: Clock,
        stop_event: threading.Event,
    ) -> None:
        """The agent of a registered node whose trainer is served; starts nothing."""
        self.config = config
        self.registry = registry
        self.trainer = trainer
        self.trainer_server = trainer_server
        self.credentials = credentials
        self.clock = clock
        self.stop_event = stop_event
        self.trust = group_trust(config)
        self.status = StatusReporter(config.work_dir, trainer)
        self.personaliser = Personaliser(trainer)  # started by start(), stopped by shutdown()
        self.placement = Placement(
            registry,
            trainer,
            policy_config=policy.PolicyConfig(
                performance_threshold=config.performance_threshold,
                cooldown_s=config.cooldown,
                warmup_s=0.0,  # the agent warms up with local epochs before deciding
                search_s=SEARCH_EVALUATIONS * config.group_evaluation_interval,
            ),
            invite_ok=config.invite_code is not None,
            max_candidates=config.max_candidates,
            clock=clock,
            admissible=self._admissible,
            seed=zlib.crc32(f"{config.name}/{config.seed}".encode()),  # nodes explore differently
        )
        self.actions = GroupActions(
            config,
            registry,
            self.placement,
            trainer,
            credentials=credentials,
            trainer_url=trainer_server.url,
            report=self._heartbeat,
            trust=self.trust,
            pin=pin,
        )
        self._next_heartbeat = self._next_status = self._last_evaluation = 0.0
        self._next_evaluation = 0.0
        self._reset_timers()
        self._last_logged_round: int | None = None
        self._scored_group: int | None = None  # see _group_accuracy
        self._fit_mark: float | None = None
        self._shut_down = False

    @property
    def membership(self) -> Membership | None:
        """The group this node trains in (None between groups)."""
        return self.actions.membership

    @property
    def hosted(self) -> GroupHost | None:
        """The group this node founded and still hosts."""
        return self.actions.hosted

    # ------------------------------------------------------------------ life cycle
    @classmethod
    def start(
        cls,
        config: NodeConfig,
        *,
        registry: RegistryClient | None = None,
        clock: Clock = time.monotonic,
        stop_event: threading.Event | None = None,
    ) -> NodeAgent | None:
        """Everything before the loop: the started, registered, warmed-up and placed agent;
        None when ``stop_event`` was set while waiting for the registry. What it started is
        stopped again unless it returns an agent (:class:`FatalNodeError` for what retrying
        cannot fix)."""
        for name in FLOWER_EXECUTABLES:  # fail at once, not at the first group we found
            try:
                flower_executable(name)
            except FlowerNotInstalled as exc:
                raise FatalNodeError(str(exc)) from None
        registry = registry or RegistryClient(config.registry, ca_file=config.registry_ca)
        stop_event = stop_event or threading.Event()
        with ExitStack() as undo:
            undo.callback(registry.close)
            trainer, server = _start_trainer(config)
            undo.callback(server.stop)
            credentials = _register(config, registry, trainer, stop_event)
            if credentials is None:  # stopped while the registry was unreachable
                return None
            pin = AppPin(APP_DIR)
            agent = cls(
                config,
                registry=registry,
                trainer=trainer,
                trainer_server=server,
                credentials=credentials,
                pin=pin,
                clock=clock,
                stop_event=stop_event,
            )
            undo.pop_all()
        try:
            # Every SuperNode is pinned (also on loopback: cheaper, docs/security.md); hash
            # and import our app in the background, off the first join's path.
            threading.Thread(target=pin.preload, name="app-pin", daemon=True).start()
            agent.personaliser.start()
            agent._warm_up()
            agent._place_initially()
            agent._reset_timers()
        except BaseException:
            agent.shutdown()
            raise
        return agent

    def run(self) -> int:
        """Loop until :meth:`stop` or a signal; always shuts down. Returns 0; raises
        :class:`FatalNodeError` (after shutting down) for what retrying cannot fix."""
        try:
            while not self.stop_event.is_set():
                self.tick()
                self.stop_event.wait(LOOP_TICK_S)
        finally:
            self.shutdown()
        return 0

    def stop(self) -> None:
        self.stop_event.set()

    def tick(self) -> None:
        """One turn of the loop at ``clock()``: whatever is due."""
        now = self.clock()
        self._log_round_progress()
        self.actions.check_refused()
        self.actions.check_supernode()
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + self.config.heartbeat_interval
        if now >= self._next_status:
            self._write_status()
            self._next_status = now + self.config.status_interval
        if now >= self._next_evaluation or self._needs_home(now):
            self._last_evaluation = now
            self._evaluate_and_act()
            self.actions.tend_hosted()
            self._next_evaluation = self.clock() + self.config.group_evaluation_interval

    # ------------------------------------------------------------------ start-up
    def _admissible(self, group: GroupPublic) -> bool:
        """A candidate: trusted (mycelium.net.trust), and no run of it was refused here."""
        return group.group_id not in self.actions.refused_groups and self.trust.check(group)

    def _warm_up(self) -> None:
        self.trainer.warm_up(self.config.warmup_epochs)
        self.status.local_model_trained()
        self.placement.warmed_up()
        logger.info("warmed up: local-only accuracy %.3f", self.trainer.local_score())

    def _reset_timers(self) -> None:
        """Everything is due now, the next evaluation one interval from now."""
        now = self.clock()
        self._next_heartbeat = self._next_status = self._last_evaluation = now
        self._next_evaluation = now + self.config.group_evaluation_interval

    def _place_initially(self) -> None:
        forced = self.config.join_group
        if forced is None:
            self._evaluate_and_act()
            return
        group = safe(lambda: self.registry.get_group(forced))
        if group is None:
            logger.warning("group %s from --join is not available; choosing by probe", forced)
            self._evaluate_and_act()
            return
        # A forced placement is not a move of the policy's: it starts no cooldown.
        self.actions.join(
            group, reason="--join override", invite=self.config.invite_code, move=False
        )

    # ------------------------------------------------------------------ the loop's work
    def _needs_home(self, now: float) -> bool:
        """Out of schedule: no group, or its SuperLink is gone (rate-limited)."""
        if now - self._last_evaluation < REHOME_RETRY_S:
            return False
        return self.membership is None or self.actions.current_group_failed()

    def _log_round_progress(self) -> None:
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

    def _heartbeat(self) -> None:
        m = self.membership
        try:
            self.registry.heartbeat(
                self.credentials.node_id,
                group_id=m.group_id if m else None,
                accuracy=self._group_accuracy(m) if m else self.trainer.local_score(),
                personal_accuracy=self._personal_test_accuracy(m),
                loss=None,
                num_samples=self.trainer.num_examples,
                round=self._group_round(m),
                flower_node_id=m.supernode.flower_node_id if m else None,
            )
        except Conflict as exc:
            self.actions.resync(exc.actual_group_id)
        except RegistryUnavailable as exc:
            logger.warning("registry unreachable, training on: %s", exc)
        except RegistryError as exc:
            logger.warning("heartbeat refused: %s", exc)

    def _fitted_here(self, m: Membership) -> bool:
        """A round of ``m``'s group reached us since we joined it (fits before it were
        another group's)."""
        if self._scored_group != m.group_id:  # first report in this group: mark the fits
            self._scored_group, self._fit_mark = m.group_id, self.trainer.last_fit_at
        return self.trainer.last_fit_at != self._fit_mark

    def _group_accuracy(self, m: Membership) -> float | None:
        """The current group's model on our validation data, measured since we joined it:
        the last fit's score once a round ran in this group, else our probe of it at the
        last decision, else None (the registry counts members' reports as the group's
        verified accuracy, so a score of another group, or our local one, must not go)."""
        if self._fitted_here(m):
            return self.trainer.group_score
        return self.placement.probed_score(m.group_id)

    def _personal(self, m: Membership | None) -> PersonalScores | None:
        """Scores of the model this node predicts with (its personal model or the plain
        group model) for its current group's latest model, None before one reached us."""
        if m is None or not self._fitted_here(m):
            return None
        return personal_in_group(self.trainer, self._fit_mark)

    def _personal_test_accuracy(self, m: Membership | None) -> float | None:
        """What the heartbeat reports as ``personal_accuracy``: the test accuracy (own test
        split, used by no choice) of the model this node predicts with in its group."""
        scores = self._personal(m)
        return None if scores is None else scores.test_accuracy

    def _group_round(self, m: Membership | None) -> int | None:
        """The round we last trained in our current group, None before its first one: the
        registry takes members' rounds that advance as a sign their group trains
        (docs/architecture.md, "Members vouch"), so another group's round must not go."""
        return self.trainer.last_round if m is not None and self._fitted_here(m) else None

    def _write_status(self) -> None:
        self.status.write(
            name=self.config.name,
            node_id=self.credentials.node_id,
            group_id=self.membership.group_id if self.membership else None,
            moves=self.placement.moves,
            hosting_group_id=self.hosted.group_id if self.hosted else None,
            personal=self._personal(self.membership),
        )

    # ------------------------------------------------------------------ decisions
    def _evaluate_and_act(self) -> None:
        task, fingerprint = self.trainer.task_name, self.trainer.spec.fingerprint
        # Only groups of our task and model: any other model cannot be probed on our data.
        groups = safe(
            lambda: self.registry.list_groups(task=task, fingerprint=fingerprint, limit=100)
        )
        if groups is None:
            return  # registry down: keep training where we are
        current_id = self.membership.group_id if self.membership else None
        decision = self.placement.decide(groups, current_id)
        logger.debug("decision: %s", decision)
        self.actions.act(decision, groups)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Leave the group, deregister, stop every child, close the client. Idempotent;
        at most one log line when the registry cannot be told (it then marks the node
        dead after its TTL and the hosted group failed after the group TTL)."""
        if self._shut_down:
            return
        self._shut_down = True
        self.personaliser.stop()
        reachable = True
        try:
            reachable = self._leave_network()
        finally:
            try:
                self.actions.stop_all(registry_reachable=reachable)
            finally:
                self.trainer_server.stop()
                self.registry.close()

    def _leave_network(self) -> bool:
        """Leave the group and deregister (which also drops the membership). False, with
        one warning, when the registry cannot be reached."""
        node_id = self.credentials.node_id
        try:
            if self.membership is not None:
                self._leave_group(self.membership.group_id, node_id)
            self.registry.delete_node(node_id)
        except RegistryUnavailable as exc:
            logger.warning(
                "registry unreachable while leaving; it marks node %s dead after its TTL: %s",
                node_id,
                exc,
            )
            return False
        except RegistryError as exc:
            logger.warning("could not deregister node %s: %s", node_id, exc)
            return True
        logger.info("deregistered node %s", node_id)
        return True

    def _leave_group(self, group_id: int, node_id: int) -> None:
        try:
            self.registry.leave_group(group_id, node_id)
        except RegistryUnavailable:
            raise
        except RegistryError as exc:  # e.g. the group is gone: deregistering still works
            logger.debug("leaving group %s: %s", group_id, exc)
        else:
            logger.info("left group %s", group_id)


def _start_trainer(cfg: NodeConfig) -> tuple[LocalTrainer, TrainerServer]:
    """The node's warm trainer on its data, served on loopback (FatalNodeError for an
    unusable task, data file or work dir: nothing is started then)."""
    from mycelium.flower.trainer import LocalTrainer
    from mycelium.flower.trainer_http import TrainerServer
    from mycelium.learning.personal import check_personal

    try:
        check_personal(cfg.personal)
    except ValueError as exc:
        raise FatalNodeError(str(exc)) from None
    task = load_node_task(cfg)
    data = load_node_data(cfg, task)
    try:
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FatalNodeError(f"cannot create work dir {cfg.work_dir}: {exc}") from None
    trainer = LocalTrainer(data, seed=cfg.seed, task=task, personal=cfg.personal)
    server = TrainerServer(trainer)
    server.start()
    return trainer, server


def _register(
    cfg: NodeConfig, registry: RegistryClient, trainer: LocalTrainer, stop: threading.Event
) -> NodeCreated | None:
    """Register, retried with exponential backoff while the registry is unreachable; None
    when ``stop`` is set meanwhile. A refusal is fatal: our input is wrong."""
    attempt = 0
    while not stop.is_set():
        try:
            credentials = registry.register_node(
                name=cfg.name,
                num_samples=trainer.num_examples,
                task=trainer.task_name,
                address=cfg.node_address or cfg.public_host,
            )
        except RegistryUnavailable as exc:
            delay = REGISTER_BACKOFF.delay(attempt)
            logger.warning("register: registry unreachable (%s); retrying in %.1fs", exc, delay)
            stop.wait(delay)
            attempt += 1
        except RegistryError as exc:
            raise FatalNodeError(f"registration refused: {exc}") from None
        else:
            logger.info("registered as node %s (%s)", credentials.node_id, cfg.name)
            return credentials
    return None


def group_trust(cfg: NodeConfig) -> GroupTrust:
    """The rule this node applies to groups: the whole network is on this machine when the
    registries are on loopback; certificates it is given are kept in WORK_DIR/trust."""
    local = all(is_loopback(host) for host in cfg.registry.hosts)
    return GroupTrust(cfg.work_dir / "trust", local_network=local, insecure=cfg.insecure)


def run_node(cfg: NodeConfig) -> int:
    """Run an agent until SIGINT/SIGTERM (0); :class:`FatalNodeError` for what retrying
    cannot fix."""
    stop = threading.Event()

    def _handler(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: leaving the network", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    agent = NodeAgent.start(cfg, stop_event=stop)
    return 0 if agent is None else agent.run()
