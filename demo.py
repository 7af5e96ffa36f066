"""One-command demo: a registry and N nodes form groups, learn and migrate.

Everything runs as real processes (the registry, node agents, and the SuperLinks,
SuperNodes and Flower apps they start). The demo only watches the registry, draws a
live view, and writes a report and a figure at the end.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mycelium import config as defaults
from mycelium import launch
from mycelium.client import RegistryClient, RegistryError
from mycelium.procs import ManagedProcess, free_port, port_is_free, tree_rss_mb, wait_for

logger = logging.getLogger(__name__)

DEFAULT_PORT = defaults.REGISTRY_PORT
POLL_S = 1.0
STABLE_CYCLES = 3
# Stability: no membership change for STABLE_CYCLES evaluation cycles, then at least
# STABLE_ROUNDS rounds in every group, whose accuracy is flat: group accuracy comes from
# members' small validation splits (one image is worth ~0.03), so means of FLAT_SPAN rounds
# are compared.
STABLE_ROUNDS = 6
FLAT_SPAN = 3
FLAT_ACCURACY = 0.03
MEMBERSHIP_EVENTS = ("joined", "left", "migrated", "evicted")
START_GAP_S = 3.0


@dataclass(frozen=True)
class DemoConfig:
    nodes: int = 6
    scenario: str = "rotate"
    clusters: int = 3
    duration: float = 180.0
    seed: int = 0
    port: int | None = None
    keep_running: bool = False
    run_dir: Path | None = None
    report_path: Path | None = None
    plot_path: Path | None = None
    heartbeat_interval: float = 2.0
    evaluation_interval: float = 10.0
    cooldown: float = 30.0
    node_ttl: float = 10.0
    group_ttl: float = 40.0
    misplace: bool = True
    # Each node holds 1/(shards_per_node x nodes) of the digits: scarce local data is
    # where federation pays off (with 6 nodes a node's local-only model is ~0.8, not ~0.96).
    shards_per_node: int = 4


@dataclass(frozen=True)
class NodeSpec:
    """One demo node: its name, latent cluster and data shard."""

    name: str
    cluster: int
    index: int
    misplaced: bool = False


def plan_nodes(config: DemoConfig) -> list[NodeSpec]:
    """Nodes round-robin over clusters; the last one starts in a wrong group."""
    if config.nodes < 1 or config.clusters < 1:
        raise ValueError("need at least one node and one cluster")
    specs = [NodeSpec(f"n{i}", i % config.clusters, i) for i in range(config.nodes)]
    can_misplace = config.misplace and config.clusters > 1 and config.nodes > config.clusters
    if can_misplace:
        last = specs[-1]
        specs[-1] = NodeSpec(last.name, last.cluster, last.index, misplaced=True)
    return specs


@dataclass
class Snapshot:
    """What the registry says at one moment, plus the nodes' true clusters."""

    at: float
    groups: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    events: list[dict[str, Any]]


@dataclass
class DemoRun:
    """The state of a running demo: its processes and what it has observed."""

    config: DemoConfig
    run_dir: Path
    registry_url: str = ""
    specs: list[NodeSpec] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    started_unix: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)

    peak_rss_mb: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def sample_memory(self) -> None:
        """Track the peak resident memory of the whole demo (this process and children)."""
        self.peak_rss_mb = max(self.peak_rss_mb, tree_rss_mb(os.getpid()))


# ---------------------------------------------------------------------- processes
def start_registry(run: DemoRun) -> ManagedProcess:
    cfg = run.config
    port = cfg.port or (DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port())
    try:
        started = launch.start_registry(
            port=port,
            db=run.run_dir / "registry.db",
            log_path=run.run_dir / "logs" / "registry.log",
            node_ttl=cfg.node_ttl,
            group_ttl=cfg.group_ttl,
        )
    except launch.LaunchError as exc:
        raise RuntimeError(str(exc)) from None
    run.processes.append(started.process)
    run.registry_url = started.url
    return started.process


def start_node(run: DemoRun, spec: NodeSpec, join_group: int | None) -> ManagedProcess:
    cfg = run.config
    args = launch.node_command(
        name=spec.name,
        registry_url=run.registry_url,
        scenario=cfg.scenario,
        clusters=cfg.clusters,
        cluster=spec.cluster,
        partition=f"{spec.index}/{cfg.nodes * cfg.shards_per_node}",
        seed=cfg.seed,
        heartbeat_interval=cfg.heartbeat_interval,
        group_evaluation_interval=cfg.evaluation_interval,
        cooldown=cfg.cooldown,
        max_capacity=max(2, cfg.nodes),
        work_dir=run.run_dir / spec.name,
        join=join_group,
    )
    proc = ManagedProcess(
        spec.name, args, log_path=run.run_dir / "logs" / f"{spec.name}.log"
    ).start()
    run.processes.append(proc)
    return proc


def stop_all(run: DemoRun) -> None:
    """SIGTERM every node at once (each leaves its group and stops its Flower children),
    wait for them, then stop the registry last so their goodbyes reach it."""
    nodes = [p for p in run.processes if p.name != "registry"]
    for proc in nodes:
        proc.terminate()
    for proc in nodes:
        proc.stop(timeout=30)
    for proc in run.processes:
        if proc.name == "registry":
            proc.stop(timeout=10)


# ---------------------------------------------------------------------- observing
def snapshot(client: RegistryClient, run: DemoRun) -> Snapshot:
    run.sample_memory()
    groups = client.list_groups(limit=100)
    details = [client.get_group(g["group_id"]) for g in groups]
    nodes = client.list_nodes()
    since = run.events[-1]["id"] if run.events else 0
    run.events.extend(client.events(since=since, limit=500))
    return Snapshot(at=run.elapsed(), groups=details, nodes=nodes, events=run.events)


def cluster_of(run: DemoRun) -> dict[str, int]:
    return {s.name: s.cluster for s in run.specs}


def purity(members: list[str], clusters: dict[str, int]) -> float | None:
    """Share of a group's members from its majority cluster (None for an empty group)."""
    known = [clusters[m] for m in members if m in clusters]
    if not known:
        return None
    return max(known.count(c) for c in set(known)) / len(known)


def migrations(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "migrated"]


def is_stable(
    groups: list[dict[str, Any]], events: list[dict[str, Any]], now: float, window: float
) -> bool:
    """The network has settled (all times in unix seconds):

    - no membership change (join, leave, migration, eviction) for ``window`` seconds;
    - every group with members completed ``STABLE_ROUNDS`` rounds since that change;
    - and its accuracy is flat: the mean of its last ``FLAT_SPAN`` rounds is within
      ``FLAT_ACCURACY`` of the mean of the ``FLAT_SPAN`` rounds before them.
    """
    changes = [e["at"] for e in events if e["type"] in MEMBERSHIP_EVENTS]
    if not changes or now - max(changes) < window:
        return False
    populated = [g for g in groups if g.get("members")]
    return bool(populated) and all(_settled(g, max(changes)) for g in populated)


def _settled(group: dict[str, Any], since: float) -> bool:
    accs = [r["accuracy"] for r in group.get("rounds", []) if r["reported_at"] > since]
    if len(accs) < max(STABLE_ROUNDS, 2 * FLAT_SPAN):
        return False
    last, before = accs[-FLAT_SPAN:], accs[-2 * FLAT_SPAN : -FLAT_SPAN]
    return abs(sum(last) / FLAT_SPAN - sum(before) / FLAT_SPAN) <= FLAT_ACCURACY


# ---------------------------------------------------------------------- the run
def _wait_for_group_of_other_cluster(
    client: RegistryClient, run: DemoRun, spec: NodeSpec
) -> int | None:
    """A live group whose members all come from a cluster other than ``spec``'s."""
    clusters = cluster_of(run)

    def find() -> int | None:
        for node in client.list_nodes(alive=True):
            gid, cluster = node.get("group_id"), clusters.get(node["name"])
            if gid is not None and cluster is not None and cluster != spec.cluster:
                return int(gid)
        return None

    try:
        return wait_for(find, timeout=120, interval=POLL_S, what="a group to misplace into")
    except TimeoutError:
        logger.warning("no group to misplace %s into; it chooses freely", spec.name)
        return None


def start_nodes(run: DemoRun, client: RegistryClient, on_tick: Callable[[], None]) -> None:
    for spec in run.specs:
        join = _wait_for_group_of_other_cluster(client, run, spec) if spec.misplaced else None
        start_node(run, spec, join)
        deadline = time.monotonic() + START_GAP_S
        while time.monotonic() < deadline:
            on_tick()
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def watch(
    run: DemoRun, client: RegistryClient, on_snapshot: Callable[[Snapshot], None]
) -> Snapshot:
    """Poll the registry until the network is stable or the duration is over."""
    window = STABLE_CYCLES * run.config.evaluation_interval
    last = snapshot(client, run)
    while run.elapsed() < run.config.duration:
        _check_children(run)
        try:
            last = snapshot(client, run)
        except RegistryError as exc:
            logger.warning("registry poll failed: %s", exc)
        on_snapshot(last)
        settled = is_stable(last.groups, run.events, time.time(), window)
        if settled and _everyone_placed(run, last):
            run.timings["stable_at_s"] = round(last.at, 1)
            break
        time.sleep(POLL_S)
    return last


def _everyone_placed(run: DemoRun, snap: Snapshot) -> bool:
    placed = {n["name"] for n in snap.nodes if n.get("group_id") is not None and n["alive"]}
    return all(s.name in placed for s in run.specs)


def _check_children(run: DemoRun) -> None:
    for proc in run.processes:
        if not proc.is_running():
            raise RuntimeError(f"{proc.name} exited with {proc.returncode()}; see {proc.log_path}")


# ---------------------------------------------------------------------- summary
def read_node_status(run: DemoRun) -> dict[str, dict[str, Any]]:
    """Each agent writes status.json in its work dir (local-only vs group accuracy)."""
    status: dict[str, dict[str, Any]] = {}
    for spec in run.specs:
        path = run.run_dir / spec.name / "status.json"
        try:
            status[spec.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            status[spec.name] = {}
    return status


def build_report(run: DemoRun, snap: Snapshot) -> dict[str, Any]:
    clusters = cluster_of(run)
    status = read_node_status(run)
    names = {
        e["node_id"]: e["data"].get("name") for e in run.events if e["type"] == "node_registered"
    }
    groups = []
    for g in snap.groups:
        members = [m["name"] for m in g.get("members", [])]
        groups.append(
            {
                "group_id": g["group_id"],
                "name": g["name"],
                "status": g["status"],
                "members": [{"name": m, "cluster": clusters.get(m)} for m in members],
                "purity": purity(members, clusters),
                "accuracy": g.get("accuracy"),
                "round": g.get("round"),
                "rounds": [
                    {
                        "round": r["round"],
                        "accuracy": r["accuracy"],
                        "loss": r["loss"],
                        "num_nodes": r["num_nodes"],
                        "at": r["reported_at"],
                    }
                    for r in g.get("rounds", [])
                ],
            }
        )
    nodes = []
    for spec in run.specs:
        st = status.get(spec.name, {})
        nodes.append(
            {
                "name": spec.name,
                "cluster": spec.cluster,
                "misplaced": spec.misplaced,
                "group_id": st.get("group_id"),
                "local_test_accuracy": st.get("local_test_accuracy"),
                "group_test_accuracy": st.get("group_test_accuracy"),
            }
        )
    return {
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run.config).items()
        },
        "registry_url": run.registry_url,
        "groups": groups,
        "nodes": nodes,
        "migrations": [
            {
                "node_id": e.get("node_id"),
                "node": names.get(e.get("node_id")),
                "at": e["at"],
                **e.get("data", {}),
            }
            for e in migrations(run.events)
        ],
        "events": run.events,
        "started_unix": run.started_unix,
        "timings": {
            **run.timings,
            "wall_s": round(run.elapsed(), 1),
            "peak_rss_mb": round(run.peak_rss_mb),
        },
    }


@contextmanager
def _registry_client(url: str) -> Iterator[RegistryClient]:
    client = RegistryClient(url, timeout=5.0)
    try:
        yield client
    finally:
        client.close()


def run_demo(config: DemoConfig, view: Any = None) -> dict[str, Any]:
    """Run the demo to the end; every child is stopped before this returns."""
    run_dir = config.run_dir or Path(tempfile.mkdtemp(prefix="mycelium-demo-", dir="."))
    run_dir.mkdir(parents=True, exist_ok=True)
    run = DemoRun(config=config, run_dir=run_dir, specs=plan_nodes(config))
    try:
        start_registry(run)
        if view is not None:
            view.started(run)
        with _registry_client(run.registry_url) as client:
            tick = (lambda: view.update(run, snapshot(client, run))) if view else (lambda: None)
            start_nodes(run, client, tick)
            run.timings["nodes_started_s"] = round(run.elapsed(), 1)
            last = watch(run, client, (lambda s: view.update(run, s)) if view else (lambda s: None))
            report = build_report(run, last)
        _write_outputs(run, report)
        if view is not None:
            view.finished(run, report)
        return report
    finally:
        stop_all(run)


def _write_outputs(run: DemoRun, report: dict[str, Any]) -> None:
    report_path = run.config.report_path or run.run_dir / "report.json"
    plot_path = run.config.plot_path or run.run_dir / "demo.png"
    report["report_path"], report["plot_path"] = str(report_path), str(plot_path)
    report_path.write_text(json.dumps(report, indent=2))
    from mycelium.demo_plot import plot_report

    plot_report(report, plot_path)
