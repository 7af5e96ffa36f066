"""One demo run: start a registry and N node agents, watch until the network settles (or a
process fails), report, and stop everything.

Everything runs as real processes (the registry, node agents, and the SuperLinks,
SuperNodes and Flower apps they start). The demo only watches the registry and its own
children: when one of them exits unexpectedly the run stops at once, names it, and keeps
the report of what it saw.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from mycelium import config as defaults
from mycelium import launch
from mycelium.client import RegistryClient, RegistryError
from mycelium.demo.config import DemoConfig, NodeSpec, plan_nodes
from mycelium.demo.observation import (
    STABLE_CYCLES,
    DemoFailed,
    DemoRun,
    Snapshot,
    everyone_placed,
    is_stable,
)
from mycelium.demo.report import build_report, write_outputs
from mycelium.procs import (
    ManagedProcess,
    become_subreaper,
    descendant_pids,
    free_port,
    port_is_free,
    reap,
    terminate_pids,
)
from mycelium.zygote import Zygote

logger = logging.getLogger(__name__)

DEFAULT_PORT = defaults.REGISTRY_PORT
POLL_S = 1.0
START_GAP_S = 2.0  # forked agents start in a fraction of a second (mycelium.zygote)
MISPLACE_WAIT_S = 120.0
STOP_BUDGET_S = 30.0  # a normal stop: agents leave their groups and say goodbye
FAILED_STOP_BUDGET_S = 6.0  # after a failure everything must be down within seconds


class View(Protocol):
    """What the demo tells its viewer (see :class:`mycelium.demo.live.LiveView`)."""

    def started(self, run: DemoRun) -> None: ...
    def update(self, run: DemoRun, snap: Snapshot) -> None: ...
    def finished(self, run: DemoRun, report: dict[str, Any]) -> None: ...
    def holding(self, run: DemoRun) -> None: ...


# ---------------------------------------------------------------------- processes
def start_registry(run: DemoRun) -> ManagedProcess:
    """The registry on ``--port``, else on 8000 when free, else on any free port."""
    cfg = run.config
    port = cfg.port or (DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port())
    try:
        try:
            started = _launch_registry(run, port)
        except launch.LaunchError as exc:
            if cfg.port is not None or "already in use" not in str(exc):
                raise
            started = _launch_registry(run, free_port())  # someone took 8000 meanwhile
    except launch.LaunchError as exc:
        raise DemoFailed(str(exc), {"process": "registry", "cause": str(exc)}) from None
    run.processes.append(started.process)
    run.registry_url = started.url
    return started.process


def _launch_registry(run: DemoRun, port: int) -> launch.RegistryProcess:
    return launch.start_registry(
        port=port,
        db=run.run_dir / "registry.db",
        log_path=run.run_dir / "logs" / "registry.log",
        node_ttl=run.config.node_ttl,
        group_ttl=run.config.group_ttl,
    )


def start_node(run: DemoRun, spec: NodeSpec, join_group: int | None) -> ManagedProcess:
    cfg = run.config
    proc = launch.start_agent(
        run.run_dir,
        name=spec.name,
        log_path=run.run_dir / "logs" / f"{spec.name}.log",
        registry_url=run.registry_url,
        task=cfg.task,
        scenario=cfg.scenario,
        clusters=cfg.clusters,
        cluster=spec.cluster,
        partition=f"{spec.index}/{cfg.nodes * cfg.shards_per_node}",
        seed=cfg.seed,
        heartbeat_interval=cfg.heartbeat_interval,
        group_evaluation_interval=cfg.evaluation_interval,
        cooldown=cfg.cooldown,
        max_capacity=max(2, cfg.nodes),
        join=join_group,
        spawner=run.zygote,
    )
    run.processes.append(proc)
    return proc


def stop_all(run: DemoRun, budget: float = STOP_BUDGET_S, *, failed: bool = False) -> None:
    """SIGTERM every node at once (each leaves its group and stops its Flower children),
    wait for them within one shared ``budget``, then stop the registry last so their
    goodbyes reach it; whatever outlives the budget is killed. After a failure the nodes'
    Flower children are signalled at once too, instead of by their agents in turn."""
    deadline = time.monotonic() + budget
    nodes = [p for p in run.processes if p.name != "registry"]
    running = [p for p in nodes if p.is_running()] if failed else []
    grandchildren = [pid for p in running for pid in descendant_pids(p.pid or 0)]
    for proc in nodes:
        proc.terminate()
    for pid in grandchildren:
        _sigterm(pid)
    for proc in nodes:
        proc.stop(timeout=max(0.5, deadline - time.monotonic()))
    if run.zygote is not None:  # after its agents: they get SIGTERM when it ends
        run.zygote.close()
    for proc in run.processes:
        if proc.name == "registry":
            proc.stop(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
    # What a crashed agent left behind (e.g. a ServerApp whose SuperLink died) was adopted
    # by this process (see run_demo): stop it too, so nothing outlives the demo.
    leftovers = _leftovers(run)
    terminate_pids(leftovers, timeout=max(1.0, deadline - time.monotonic()))
    reap(leftovers)


def _leftovers(run: DemoRun) -> list[int]:
    """This process's descendants, less those it had before the demo and theirs."""
    foreign = set(run.foreign)
    for pid in run.foreign:
        foreign.update(descendant_pids(pid))
    return [pid for pid in descendant_pids(os.getpid()) if pid not in foreign]


def _sigterm(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------- the run
def _misplacement_target(run: DemoRun, client: RegistryClient, spec: NodeSpec) -> int | None:
    """A group holding a live node of a cluster other than ``spec``'s, if any now."""
    clusters = {s.name: s.cluster for s in run.specs}
    try:
        alive = client.list_nodes(alive=True)
    except RegistryError:
        return None
    for node in alive:
        gid, cluster = node.group_id, clusters.get(node.name)
        if gid is not None and cluster is not None and cluster != spec.cluster:
            return gid
    return None


def _wait_for_misplacement(
    run: DemoRun, client: RegistryClient, spec: NodeSpec, tick: Callable[[], None]
) -> int | None:
    deadline = time.monotonic() + MISPLACE_WAIT_S
    while time.monotonic() < deadline:
        tick()  # checks the children: a failure ends the wait at once
        target = _misplacement_target(run, client, spec)
        if target is not None:
            return target
        time.sleep(POLL_S)
    logger.warning("no group to misplace %s into; it chooses freely", spec.name)
    return None


def start_nodes(run: DemoRun, client: RegistryClient, tick: Callable[[], None]) -> None:
    for spec in run.specs:
        join = _wait_for_misplacement(run, client, spec, tick) if spec.misplaced else None
        start_node(run, spec, join)
        deadline = time.monotonic() + START_GAP_S
        while time.monotonic() < deadline:
            tick()
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def watch(run: DemoRun, client: RegistryClient, tick: Callable[[], None]) -> None:
    """Poll until the network is stable and everyone placed, or the duration is over."""
    window = STABLE_CYCLES * run.config.evaluation_interval
    names = [s.name for s in run.specs]
    while run.elapsed() < run.config.time_budget:
        tick()
        last = run.last
        if (
            last is not None
            and is_stable(last.groups, run.events, time.time(), window)
            and everyone_placed(names, last)
        ):
            run.timings["stable_at_s"] = round(last.at, 1)
            return
        time.sleep(POLL_S)


def hold(run: DemoRun, tick: Callable[[], None]) -> None:
    """``--keep-running``: leave the network up until Ctrl-C (or SIGTERM, which the CLI
    turns into KeyboardInterrupt); a child failing still ends the run."""
    try:
        while True:
            tick()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return


@contextmanager
def _registry_client(url: str) -> Iterator[RegistryClient]:
    client = RegistryClient(url, timeout=defaults.REGISTRY_TIMEOUT_S)
    try:
        yield client
    finally:
        client.close()


def new_run_dir(config: DemoConfig) -> Path:
    """The run folder: ``--run-dir``, else a new ``./mycelium-demo-*`` (absolute)."""
    if config.run_dir is not None:
        config.run_dir.mkdir(parents=True, exist_ok=True)
        return config.run_dir
    return Path(tempfile.mkdtemp(prefix="mycelium-demo-", dir=Path.cwd())).resolve()


def run_demo(config: DemoConfig, view: View | None = None) -> dict[str, Any]:
    """Run the demo to the end; every child is stopped before this returns.

    When a child exits unexpectedly (or the registry does not start) everything is
    stopped at once, the report of what was seen is written with its ``failure`` entry,
    and :class:`DemoFailed` is raised. The calling process becomes a child subreaper
    (Linux) for the rest of its life, so that it can stop what crashed children leave.
    """
    run = DemoRun(
        config=config,
        run_dir=new_run_dir(config),
        specs=plan_nodes(config),
        foreign=frozenset(descendant_pids(os.getpid())),
        zygote=Zygote() if config.fork_agents else None,
    )
    become_subreaper()
    try:
        if run.zygote is not None:  # its imports overlap the registry's start
            run.zygote.start()
        start_registry(run)
        if view is not None:
            view.started(run)
        with _registry_client(run.registry_url) as client:
            return _run(run, client, view)
    except DemoFailed as exc:
        logger.info("%s; stopping every process", exc)
        stop_all(run, FAILED_STOP_BUDGET_S, failed=True)
        logger.info("stopped; writing the report")
        report = build_report(run, run.last, exc.failure)
        write_outputs(run, report, figure=False)
        exc.report_path = report["report_path"]
        raise
    finally:
        stop_all(run)


def _run(run: DemoRun, client: RegistryClient, view: View | None) -> dict[str, Any]:
    def tick() -> None:
        snap = run.poll(client)
        if view is not None and snap is not None:
            view.update(run, snap)

    start_nodes(run, client, tick)
    run.timings["nodes_started_s"] = round(run.elapsed(), 1)
    watch(run, client, tick)
    report = build_report(run, run.poll(client) or run.last)
    write_outputs(run, report)
    if view is not None:
        view.finished(run, report)
    if run.config.keep_running:
        if view is not None:
            view.holding(run)
        hold(run, tick)
    return report
