"""Flower runtime benchmark: round time of a 3-node group with the warm-trainer ClientApp vs
a ClientApp that imports torch and trains itself (Flower quickstart style), plus RSS of the
group's and the nodes' Flower processes and start-up costs.

Everything is real: a registry process, a GroupHost (flower-superlink + ``flwr run``) and
one ``flower-supernode`` per node. In warm mode the three nodes' trainers
(:class:`mycelium.flower.trainer_http.TrainerServer`) live in this process, as the node
agents' would. Pinned mode (docs/security.md) is warm mode with each SuperNode in
``--isolation process`` and its tasks served by the agent's own executor thread in this
process (no SuperExec, no ``flwr-clientapp`` per message).
Round time = interval between consecutive rounds the registry received with all nodes,
after the first round (which includes start-up). RSS = VmRSS summed over a process and its
descendants, sampled every 0.5 s while rounds run (/proc; psutil is not installed).

Extra sections (e.g. migration latency, measured by the node agent's owner) plug in through
``run(sections=...)``: callables ``(workdir, registry_url) -> dict[str, float]``.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import BenchError, check_rounds_and_modes
from mycelium import launch
from mycelium.client import RegistryClient, RegistryError, read_token_file, write_token_file
from mycelium.flower.protocol import ColdData, RunConfig, SuperNodeConfig
from mycelium.flower.supernode import PinFactory
from mycelium.procs import (
    DeadlineExceeded,
    tree_rss_mb,
    wait_for,
)

logger = logging.getLogger(__name__)

NUM_NODES = 3
TARGET_RATIO = 0.5
MODES = ("warm", "cold", "pinned")  # pinned: warm, served by the agent's own executor
RSS_SAMPLE_INTERVAL = 0.5

Section = Callable[[Path, str], dict[str, float]]


@dataclass(frozen=True)
class ModeFigures:
    """Measured figures of one ClientApp mode."""

    mode: str
    round_times_s: list[float]
    superlink_ready_s: float
    run_started_s: float
    nodes_connected_s: float
    first_round_s: float
    group_rss_mb_median: float
    group_rss_mb_peak: float
    node_rss_mb_median: float
    node_rss_mb_peak: float

    @property
    def median_round_s(self) -> float:
        return statistics.median(self.round_times_s)


@dataclass
class Report:
    rounds: int
    modes: list[ModeFigures] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    def ratio(self) -> float | None:
        by = {m.mode: m.median_round_s for m in self.modes}
        return by["warm"] / by["cold"] if {"warm", "cold"} <= by.keys() else None


# -- /proc -------------------------------------------------------------------------------------
class RssSampler:
    """Samples the RSS of a group tree and of node trees in a daemon thread."""

    def __init__(self, group_pid: int, node_pids: Sequence[int]) -> None:
        self.group: list[float] = []
        self.node: list[float] = []
        self._pids = (group_pid, list(node_pids))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        group_pid, node_pids = self._pids
        while not self._stop.wait(RSS_SAMPLE_INTERVAL):
            self.group.append(tree_rss_mb(group_pid))
            self.node.extend(tree_rss_mb(p) for p in node_pids)


# -- pieces ------------------------------------------------------------------------------------
@contextmanager
def registry_process(workdir: Path) -> Iterator[str]:
    """The real registry on a free port; its operator token is in ``workdir/operator.token``
    (the bench hosts groups without a node, as the ``group`` command does)."""
    token_file = workdir / OPERATOR_TOKEN_FILE
    write_token_file(token_file)
    try:
        with launch.registry_process(
            db=workdir / "registry.db",
            log_path=workdir / "registry.log",
            operator_token_file=token_file,
        ) as registry:
            yield registry.url
    except launch.LaunchError as exc:
        raise BenchError(str(exc)) from None


OPERATOR_TOKEN_FILE = "operator.token"


class _Heartbeats:
    """Keeps the bench's registry nodes alive (as their agents would)."""

    def __init__(self, beats: Sequence[Callable[[], object]]) -> None:
        self.beats = list(beats)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(5.0):
            for beat in self.beats:
                try:
                    beat()
                except RegistryError as exc:
                    logger.warning("bench heartbeat failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _pin(mode: str) -> PinFactory | None:
    """``pinned``: the warm trainer served by our own executor (``--isolation process``,
    docs/security.md); it and the trainer live in this process, not in the node's tree."""
    if mode != "pinned":
        return None
    from mycelium.flower.group_host import APP_DIR
    from mycelium.node.admitted import AppPin

    pin = AppPin(APP_DIR)
    pin.load()
    return pin.executor


def _node_config(mode: str, index: int, stack: ExitStack) -> SuperNodeConfig:
    if mode == "cold":
        cold = ColdData("rotate", clusters=1, cluster=0, index=index, num_clients=NUM_NODES, seed=0)
        return SuperNodeConfig(cold=cold)
    from mycelium.flower.trainer import LocalTrainer
    from mycelium.flower.trainer_http import TrainerServer
    from mycelium.learning.data import make_partition

    data = make_partition(
        scenario="rotate", clusters=1, cluster=0, index=index, num_clients=NUM_NODES, seed=0
    )
    server = TrainerServer(LocalTrainer(data, seed=0))
    url = server.start()
    stack.callback(server.stop)
    return SuperNodeConfig(trainer_url=url)


def measure_mode(mode: str, registry_url: str, workdir: Path, rounds: int) -> ModeFigures:
    """Run one group of NUM_NODES nodes in ``mode`` (see MODES) for ``rounds``+1."""
    from mycelium.flower.group_host import GroupHost
    from mycelium.flower.supernode import SuperNode

    with ExitStack() as stack:
        reader = stack.enter_context(RegistryClient(registry_url))
        t0 = time.monotonic()
        host = GroupHost(
            registry_url,
            name=f"bench-{mode}",
            work_dir=workdir / mode / "group",
            creator_token=read_token_file(workdir / OPERATOR_TOKEN_FILE),
            run_config=RunConfig(min_round_timeout=60.0, first_round_timeout=180.0),
        )
        stack.callback(host.stop)
        creds = host.start()
        run_started = time.monotonic() - t0
        superlink_ready = host.superlink_ready_s or float("nan")
        supernodes = []
        pin = _pin(mode)
        t1 = time.monotonic()
        for i in range(NUM_NODES):
            config = _node_config(mode, i, stack)
            client = stack.enter_context(RegistryClient(registry_url))
            node = client.register_node(name=f"{mode}-{i}", num_samples=0)
            sn = SuperNode(
                superlink_address=str(host.fleet_address),
                node_config=config,
                work_dir=workdir / mode / "nodes",
                name=f"n{i}",
                pin=pin,
            ).start()
            stack.callback(sn.stop)
            supernodes.append((sn, client, node.node_id))
        beats = []
        for sn, client, node_id in supernodes:
            fid = sn.wait_connected(timeout=60)
            client.join_group(creds.group_id, node_id, flower_node_id=fid)
            beats.append(
                lambda c=client, n=node_id, f=fid: c.heartbeat(
                    n, group_id=creds.group_id, flower_node_id=f
                )
            )
        stack.callback(_Heartbeats(beats).close)  # stops before the clients close
        connected = time.monotonic() - t1
        node_pids = [int(sn.pid) for sn, _, _ in supernodes if sn.pid]
        with RssSampler(int(host.superlink_pid or 0), node_pids) as rss:
            _wait_rounds(reader, creds.group_id, 1, timeout=300)
            first_round = time.monotonic() - t0
            full = _wait_rounds(reader, creds.group_id, rounds + 1, timeout=120 + 90 * rounds)
        times = [b - a for a, b in zip(full, full[1:], strict=False)]
        logger.info("%s: first full round at %.1f s, round times %s", mode, first_round, times)
        return ModeFigures(
            mode=mode,
            round_times_s=[round(t, 2) for t in times],
            superlink_ready_s=round(superlink_ready, 2),
            run_started_s=round(run_started, 2),
            nodes_connected_s=round(connected, 2),
            first_round_s=round(first_round, 2),
            group_rss_mb_median=round(statistics.median(rss.group), 1),
            group_rss_mb_peak=round(max(rss.group), 1),
            node_rss_mb_median=round(statistics.median(rss.node), 1),
            node_rss_mb_peak=round(max(rss.node), 1),
        )


def _wait_rounds(reader: RegistryClient, gid: int, count: int, timeout: float) -> list[float]:
    """reported_at of the first ``count`` rounds that had all NUM_NODES nodes."""

    def full_rounds() -> list[float] | None:
        rounds = reader.get_group(gid).rounds
        done = [r.reported_at for r in rounds if r.num_nodes == NUM_NODES]
        return done if len(done) >= count else None

    try:
        return wait_for(full_rounds, timeout=timeout, interval=0.25, what=f"{count} full rounds")
    except DeadlineExceeded as exc:
        raise BenchError(str(exc)) from None


# -- entry point -------------------------------------------------------------------------------
def run(
    *,
    rounds: int = 4,
    modes: Sequence[str] = ("warm", "cold"),
    json_path: Path | None = None,
    workdir: Path | None = None,
    sections: Sequence[Section] = (),
) -> str:
    """Measure, print-ready table back; also writes JSON when asked."""
    check_rounds_and_modes(rounds, modes, MODES)
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flbench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        url = stack.enter_context(registry_process(workdir))
        report = Report(rounds=rounds)
        for mode in modes:
            report.modes.append(measure_mode(mode, url, workdir, rounds))
        for section in sections:
            report.extra.update(section(workdir, url))
    if json_path is not None:
        payload = {**asdict(report), "warm_over_cold": report.ratio(), "target": TARGET_RATIO}
        json_path.write_text(json.dumps(payload, indent=2))
    return format_report(report)


def format_report(report: Report) -> str:
    lines = [
        f"Flower group of {NUM_NODES} nodes, {report.rounds} measured rounds per mode",
        f"{'mode':<6} {'round s (median)':>17} {'rounds s':<28} {'group RSS MB':>14} "
        f"{'node RSS MB':>13} start-up s",
    ]
    for m in report.modes:
        startup = (
            f"link {m.superlink_ready_s} run {m.run_started_s} "
            f"nodes {m.nodes_connected_s} r1 {m.first_round_s}"
        )
        lines.append(
            f"{m.mode:<6} {m.median_round_s:>17.2f} {str(m.round_times_s):<28} "
            f"{m.group_rss_mb_median:>6.0f}/{m.group_rss_mb_peak:<7.0f} "
            f"{m.node_rss_mb_median:>5.0f}/{m.node_rss_mb_peak:<7.0f} {startup}"
        )
    lines.append("RSS as median/peak over samples every 0.5 s; node = one supernode's tree.")
    ratio = report.ratio()
    if ratio is not None:
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        lines.append(f"warm/cold round-time ratio: {ratio:.2f} ({verdict} target <= 0.5)")
    for key, value in report.extra.items():
        lines.append(f"{key}: {value:.2f}")
    return "\n".join(lines)
