"""``bench faults --soak SECONDS --seed N``: issue 24's chaos soak on the real stack in the
namespace lab. Six node agents on four hosts (a0, a1 on hostA; b0 on hostB; c0, c1 on
hostC; d0 on hostD), the registry on HTTPS in ``reg``, an observer host ``obs`` that no
fault touches (every read of the registry is made from there), real TLS Flower groups, the
test timers (:data:`mycelium.launch.FAST_TIMERS`).

Once every node trains, a sequence of faults drawn from ``random.Random(seed)`` runs for
``SECONDS``: one fault at a time, held for a drawn time, undone, then the bench waits until
the network healed (every live node in a group that trained since the heal, see
:func:`heal_bound`) and goes on after a short gap. The invariants are checked at every
read and at the end (:class:`Invariants`); the summary prints them with the heal times per
fault kind (median and worst).
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from tempfile import TemporaryDirectory

from bench import BenchError
from bench.faults_report import commit, load
from bench.net_bench import until
from mycelium.api import GroupPublic, NodePublic
from mycelium.lab import stack as lab
from mycelium.lab.faults import Applied, Faults
from mycelium.lab.netns import Network
from mycelium.launch import FAST_TIMERS
from mycelium.procs import ManagedProcess, cmdline, descendant_pids, stat_fields
from mycelium.registry.store.audit import audit

logger = logging.getLogger(__name__)

HOSTS = ("hostA", "hostB", "hostC", "hostD")
OBSERVER = "obs"
NODES = (
    ("hostA", "a0"), ("hostB", "b0"), ("hostC", "c0"),
    ("hostD", "d0"), ("hostA", "a1"), ("hostC", "c1"),
)  # fmt: skip
KINDS = (
    "loss", "partition", "mass_partition", "group_cut",
    "registry_hang", "registry_kill", "host_kill", "agent_hang",
)  # fmt: skip
NODE_TTL_S = 5.0
GROUP_TTL_S = 20.0
LOSS_SHARE = 0.05
HOST_KILL_LOSS = 0.02
FIRST_ROUND_S = 30.0
"""A group's start to its first round, with margin (measured 16-18 s on 2 cores, bench net)."""
HOLD_S = (5.0, 20.0)
GAP_S = (2.0, 5.0)
READ_EVERY_S = 2.0
SETTLE_S = 5.0  # a process SIGKILLed by the last stop is gone within this
FOUNDERS = 2  # a0 and b0, one per data cluster, start first
FORM_TIMEOUT_S = 300.0
EXPLAINS = frozenset({"joined", "left", "migrated", "evicted", "node_deleted"})
ENDS_GROUP = frozenset({"dissolved", "group_failed"})


def heal_bound() -> float:
    """Seconds after a heal within which every live node is in a group that trained: a
    node is heard within a node TTL; a group whose host is gone is failed within a group
    TTL (its members see its SuperLink closed sooner); a member re-homes within two
    evaluation intervals and a cooldown; a group it founds or joins trains its first round
    within :data:`FIRST_ROUND_S`."""
    evaluation = float(FAST_TIMERS["group_evaluation_interval"])
    cooldown = float(FAST_TIMERS["cooldown"])
    return NODE_TTL_S + GROUP_TTL_S + 2 * evaluation + cooldown + FIRST_ROUND_S


@dataclass(frozen=True)
class Fault:
    kind: str
    targets: tuple[str, ...]
    hold_s: float

    def __str__(self) -> str:
        return f"{self.kind}({', '.join(self.targets)}) {self.hold_s:.0f} s"


@dataclass(frozen=True)
class Heal:
    fault: str
    kind: str
    heal_s: float | None  # None: not healed within twice the bound


@dataclass
class Invariants:
    """What was checked, and every violation seen (a description each)."""

    reads: int = 0
    unreadable: int = 0
    one_group: list[str] = field(default_factory=list)
    rounds_back: list[str] = field(default_factory=list)
    heal_late: list[str] = field(default_factory=list)
    integrity: str = "not checked"
    left_processes: list[str] = field(default_factory=list)
    lost_writes: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)  # an agent or the registry ended on its own
    error: str | None = None  # what stopped the soak before its end, if anything

    @property
    def passed(self) -> bool:
        return not (
            self.one_group or self.rounds_back or self.heal_late or self.left_processes
            or self.lost_writes or self.exited or self.integrity != "ok" or self.error
        )  # fmt: skip


@dataclass(frozen=True)
class SoakReport:
    seed: int
    seconds: float
    nodes: int
    hosts: int
    formed_s: float
    bound_s: float
    faults: list[str]
    heals: list[Heal]
    invariants: Invariants
    commit: str | None = None
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None

    @property
    def passed(self) -> bool:
        return self.invariants.passed and all(h.heal_s is not None for h in self.heals)


# -- pure parts ---------------------------------------------------------------------------
def draw(rng: random.Random) -> Fault:
    """The next fault: a kind, its targets, how long it holds."""
    kind = rng.choice(KINDS)
    hold = round(rng.uniform(*HOLD_S), 1)
    hosts = list(HOSTS)
    if kind in ("loss", "partition"):
        targets: tuple[str, ...] = (rng.choice(hosts),)
    elif kind == "mass_partition":
        targets = tuple(sorted(rng.sample(hosts, len(hosts) // 2)))
    elif kind in ("group_cut", "host_kill"):
        targets = tuple(rng.sample(hosts, 2))  # host_kill: killed, then the lossy one
    elif kind == "agent_hang":
        targets = (rng.choice([name for _, name in NODES]),)
    else:
        targets = ("registry",)
    return Fault(kind, targets, hold)


def heal_summary(heals: list[Heal]) -> dict[str, tuple[int, float | None, float | None]]:
    """Per fault kind: (count, median heal s, worst heal s) over the heals that happened."""
    out: dict[str, tuple[int, float | None, float | None]] = {}
    for kind in sorted({h.kind for h in heals}):
        times = [h.heal_s for h in heals if h.kind == kind and h.heal_s is not None]
        count = sum(h.kind == kind for h in heals)
        if times:
            out[kind] = (count, round(statistics.median(times), 1), round(max(times), 1))
        else:
            out[kind] = (count, None, None)
    return out


def format_soak(report: SoakReport) -> str:
    inv = report.invariants

    def verdict(violations: list[str]) -> str:
        return "pass" if not violations else f"FAIL ({len(violations)}: {violations[0]})"

    lines = [
        f"soak seed {report.seed}: {report.seconds:.0f} s, {len(report.faults)} faults, "
        f"{report.nodes} nodes on {report.hosts} hosts; formed in {report.formed_s:.0f} s; "
        f"{'PASS' if report.passed else 'FAIL'}",
        f"- commit {report.commit or '?'}; load {report.load_before} before, "
        f"{report.load_after} after",
        f"- reads: {inv.reads} ({inv.unreadable} unanswered while faulted)",
        f"- every node in at most one group at every read: {verdict(inv.one_group)}",
        f"- after each heal every live node in a training group within {report.bound_s:.0f} s: "
        f"{verdict(inv.heal_late)}",
        f"- no round goes backwards in a surviving group: {verdict(inv.rounds_back)}",
        f"- registry database integrity_check: {inv.integrity}",
        f"- no Flower or agent process left after stop: {verdict(inv.left_processes)}",
        f"- no acknowledged write lost: {verdict(inv.lost_writes)}",
        f"- no agent or registry exited on its own: {verdict(inv.exited)}",
        f"- ran to its end: {'yes' if inv.error is None else 'NO, ' + inv.error}",
        "- heal times (kind: count, median, worst s): "
        + "; ".join(
            f"{kind}: {n}, {med if med is not None else '-'}, {worst if worst is not None else '-'}"
            for kind, (n, med, worst) in heal_summary(report.heals).items()
        ),
        "- faults: " + "; ".join(report.faults),
    ]
    return "\n".join(lines)


# -- the lab ------------------------------------------------------------------------------
@dataclass
class Seen:
    """What the reads saw, for the checks at the end."""

    nodes: dict[int, float] = field(default_factory=dict)  # node id -> first seen
    groups: dict[int, float] = field(default_factory=dict)
    members: dict[tuple[int, int], float] = field(default_factory=dict)  # (node, group) -> t
    rounds: dict[int, int] = field(default_factory=dict)  # group -> highest round seen
    pids: dict[tuple[int, str], str] = field(default_factory=dict)  # (pid, start) -> cmd


@dataclass(frozen=True)
class Observation:
    at: float
    nodes: list[NodePublic]
    groups: dict[int, GroupPublic]

    def current(self, name: str) -> NodePublic | None:
        """The newest registration of the agent ``name`` (a restarted agent registers anew)."""
        named = [n for n in self.nodes if n.name == name]
        return max(named, key=lambda n: n.node_id) if named else None

    def training(self, name: str, bar: dict[int, int]) -> bool:
        """``name`` alive in an active, alive group that reported a round beyond ``bar``."""
        node = self.current(name)
        if node is None or not node.alive or node.group_id is None:
            return False
        group = self.groups.get(node.group_id)
        if group is None or group.status != "active" or not group.alive or group.round is None:
            return False
        return group.round > bar.get(group.group_id, -1)


def _stat(pid: int) -> tuple[str, str] | None:
    """``pid``'s state letter and start time (clock ticks after boot), or None: gone."""
    fields = stat_fields(pid)
    return None if fields is None or len(fields) < 20 else (fields[0], fields[19])


def _proc_start(pid: int) -> str | None:
    stat = _stat(pid)
    return None if stat is None else stat[1]


def _cmdline(pid: int) -> str:
    return (cmdline(pid) or "")[:120]


def namespace_pids(network: Network) -> list[int]:
    """Every process in the lab's namespaces now (``ip netns pids``)."""
    pids: list[int] = []
    for host in network.hosts.values():
        out = subprocess.run(
            ["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=10
        ).stdout
        pids += [int(p) for p in out.split()]
    return pids


class Soak:
    """The lab, its processes and the checks; :meth:`run` is the soak."""

    def __init__(self, network: Network, work: Path, seed: int) -> None:
        self.network = network
        self.work = work
        self.seed = seed
        self.inv = Invariants()
        self.seen = Seen()
        self.agents: dict[str, ManagedProcess] = {}
        self.down: set[str] = set()  # agents (or the registry) killed or hung now
        self.exited: set[str] = set()
        self.registry: ManagedProcess | None = None
        self.last: Observation | None = None
        self.faults: list[str] = []
        self.heals: list[Heal] = []

    def chaos(
        self,
        view: lab.RegistryView,
        faults: Faults,
        seconds: float,
        rng: random.Random,
        bound: float,
    ) -> None:
        """Faults drawn from ``rng`` one after the other for ``seconds``: each held, undone,
        its heal timed against ``bound``."""  # fmt: skip
        end = time.time() + seconds
        while time.time() < end:
            fault = draw(rng)
            logger.info("soak: %s", fault)
            self.faults.append(str(fault))
            undo = self.apply(faults, fault)
            try:
                self.watch(view, time.time() + fault.hold_s)
            finally:
                undo()
            healed = self.wait_healed(view, bound)
            self.heals.append(Heal(str(fault), fault.kind, healed))
            if healed is None or healed > bound:
                self.inv.heal_late.append(f"{fault}: {'never' if healed is None else healed}")
            self.watch(view, time.time() + rng.uniform(*GAP_S))

    # -- reads and the checks made at each -------------------------------------------------
    def read(self, view: lab.RegistryView) -> Observation | None:
        self._processes()
        try:
            nodes = view.nodes()
            groups = {g.group_id: g for g in view.groups(include_dead=True)}
        except (AssertionError, RuntimeError, ValueError, subprocess.SubprocessError):
            self.inv.unreadable += 1
            return None
        obs = Observation(time.time(), nodes, groups)
        self.inv.reads += 1
        self._check(obs)
        self.last = obs
        return obs

    def _check(self, obs: Observation) -> None:
        seen = self.seen
        for node in obs.nodes:
            seen.nodes.setdefault(node.node_id, obs.at)
            if node.group_id is not None:
                seen.members.setdefault((node.node_id, node.group_id), obs.at)
        for gid, group in obs.groups.items():
            seen.groups.setdefault(gid, obs.at)
            if group.round is None:
                continue
            top = seen.rounds.get(gid, -1)
            if group.round < top and group.status == "active":
                self.inv.rounds_back.append(f"group {gid} round {top} -> {group.round}")
            seen.rounds[gid] = max(top, group.round)

    def _processes(self) -> None:
        """Every agent owns at most one SuperNode; every lab process is remembered."""
        watched = dict(self.agents) | ({"registry": self.registry} if self.registry else {})
        for name, proc in watched.items():
            if not proc.is_running() and name not in self.down | self.exited:
                self.exited.add(name)
                self.inv.exited.append(f"{name} exited {proc.returncode()}")
        for name, proc in self.agents.items():
            if proc.pid is None or not proc.is_running():
                continue
            tree = descendant_pids(proc.pid)
            supernodes = [p for p in tree if "flower-supernode" in _cmdline(p)]
            if len(supernodes) > 1 and name not in self.down:
                self.inv.one_group.append(f"{name} runs {len(supernodes)} SuperNodes")
        for pid in namespace_pids(self.network):
            start = _proc_start(pid)
            if start is not None:
                self.seen.pids.setdefault((pid, start), _cmdline(pid))

    def watch(self, view: lab.RegistryView, until: float) -> None:
        while time.time() < until:
            self.read(view)
            time.sleep(max(0.0, min(READ_EVERY_S, until - time.time())))

    def wait_healed(self, view: lab.RegistryView, bound: float) -> float | None:
        """Seconds until every live agent is in a group that trained since now."""
        start = time.time()
        bar = dict(self.seen.rounds)
        live = [n for n in self.agents if n not in self.down]
        while time.time() < start + 2 * bound:
            obs = self.read(view)
            if obs is not None and all(obs.training(n, bar) for n in live):
                return round(obs.at - start, 1)
            time.sleep(1.0)
        return None

    # -- faults ---------------------------------------------------------------------------
    def apply(self, faults: Faults, fault: Fault) -> Callable[[], None]:
        """Make ``fault``; what undoes it back."""
        kind, targets = fault.kind, fault.targets
        if kind == "loss":
            return faults.loss(targets[0], LOSS_SHARE).undo
        if kind in ("partition", "mass_partition"):
            made = [faults.partition(host, "reg") for host in targets]
            return lambda: _undo_all(made)
        if kind == "group_cut":
            return faults.partition(targets[0], targets[1]).undo
        if kind == "registry_hang":
            return faults.hang("registry").undo
        if kind == "registry_kill":
            self.down.add("registry")
            faults.kill("registry")

            def restart_registry() -> None:
                faults.restart("registry")
                self.down.discard("registry")

            return restart_registry
        if kind == "agent_hang":
            self.down.add(targets[0])
            hung = faults.hang(targets[0])

            def resume() -> None:
                hung.undo()
                self.down.discard(targets[0])

            return resume
        # host_kill: every agent of one host killed (-9) while another host is lossy
        lossy = faults.loss(targets[1], HOST_KILL_LOSS)
        killed = [name for host, name in NODES if host == targets[0]]
        for name in killed:
            faults.kill(name)
            self.down.add(name)

        def restart() -> None:
            for name in killed:
                faults.restart(name)
                self.down.discard(name)
            lossy.undo()

        return restart

    # -- the end --------------------------------------------------------------------------
    def check_database(self, db: Path) -> None:
        """integrity_check, and every node, group and membership a read showed is there
        (or an event explains its end)."""
        found = audit(db)
        self.inv.integrity = found.integrity
        nodes, groups, events, rounds = found.nodes, found.groups, found.events, found.rounds
        lost = self.inv.lost_writes
        deleted = {node for kind, _, node, _ in events if kind == "node_deleted"}
        lost += [f"node {n}" for n in self.seen.nodes if n not in nodes and n not in deleted]
        lost += [f"group {g}" for g in self.seen.groups if g not in groups]
        for (node, group), first in self.seen.members.items():
            if nodes.get(node) == group:
                continue
            explained = any(
                at >= first - 1.0
                and ((kind in EXPLAINS and n == node) or (kind in ENDS_GROUP and g == group))
                for kind, at, n, g in events
            )
            if not explained:
                lost.append(f"node {node} in group {group} (seen at {first:.0f})")
        top: dict[int, int] = {}
        for gid, number in rounds:
            if number < top.get(gid, -1):
                self.inv.rounds_back.append(f"group {gid} stored round {top[gid]} -> {number}")
            top[gid] = max(top.get(gid, -1), number)

    def check_processes_gone(self) -> None:
        """No process the lab ran is left (by pid and start time), none in a namespace.
        A process that exited but is not reaped yet (a zombie: its parent, or init after
        it, collects it) is gone; one killed a moment ago gets :data:`SETTLE_S` to go."""

        def living() -> list[tuple[int, str, str]]:
            return [
                (pid, stat[0], cmd)
                for (pid, start), cmd in self.seen.pids.items()
                if (stat := _stat(pid)) is not None and stat[1] == start and stat[0] != "Z"
            ]

        deadline = time.monotonic() + SETTLE_S
        while living() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid, state, cmd in living():
            self.inv.left_processes.append(f"pid {pid} (state {state}): {cmd}")
        for pid in namespace_pids(self.network):
            self.inv.left_processes.append(f"pid {pid} in a lab namespace: {_cmdline(pid)}")


def _undo_all(made: list[Applied]) -> None:
    for applied in made:
        applied.undo()


@contextmanager
def _agents(soak: Soak, view: lab.RegistryView, faults: Faults) -> Iterator[None]:
    """The agents started, stopped on exit: one founder per cluster first (a0, b0), the
    others once both founded (all at once, each founds a group and they merge later)."""
    with ExitStack() as stack:
        for index, (host, name) in enumerate(NODES):
            if index == FOUNDERS:
                until(lambda: _founded(view), 240, "a0 and b0 found their groups")
            proc = lab.agent_process(
                soak.network, host, soak.work, view, name=name, cluster=index % 2,
                index=index, partitions=len(NODES), seed=soak.seed,
            )  # fmt: skip
            soak.agents[name] = faults.track(proc)
            proc.start()
            stack.callback(proc.stop, 30)
        yield


def _founded(view: lab.RegistryView) -> bool:
    return all(view.group_of(name) for _, name in NODES[:FOUNDERS])


def run_soak(seconds: float, seed: int, work: Path) -> SoakReport:
    """The soak: form, then ``seconds`` of seeded faults; the checked report."""
    bound = heal_bound()
    with Network(("reg", OBSERVER, *HOSTS)) as network:
        soak = Soak(network, work, seed)
        with ExitStack() as stack:
            view, _, registry = stack.enter_context(
                lab.https_registry(
                    network, work, node_ttl=NODE_TTL_S, group_ttl=GROUP_TTL_S,
                    view_host=OBSERVER,
                )
            )  # fmt: skip
            faults = stack.enter_context(Faults(network, work))
            soak.registry = faults.track(registry, ready=lambda: _healthy(network, view))
            started = time.time()
            stack.enter_context(_agents(soak, view, faults))
            formed = soak.wait_healed(view, FORM_TIMEOUT_S / 2)
            if formed is None:
                raise BenchError(
                    f"the {len(NODES)} nodes did not all train within {FORM_TIMEOUT_S:.0f} s"
                )
            formed_s = time.time() - started
            try:
                soak.chaos(view, faults, seconds, random.Random(seed), bound)
            except Exception as exc:  # noqa: BLE001 - recorded; the end checks still run
                logger.exception("soak stopped")
                soak.inv.error = f"{type(exc).__name__}: {exc}"
            soak.read(view)
        soak.check_processes_gone()  # before the namespaces go (that would kill leftovers)
        soak.check_database(work / "registry.db")
    return SoakReport(
        seed, seconds, len(NODES), len(HOSTS), round(formed_s, 1), bound,
        soak.faults, soak.heals, soak.inv,
    )  # fmt: skip


def run(
    *, seconds: float, seed: int, json_path: Path | None = None, workdir: Path | None = None
) -> SoakReport:
    """:func:`run_soak` in ``workdir`` (a temporary one by default); JSON when asked."""
    from bench.faults_lab import check_lab

    if seconds < 10:
        raise BenchError(f"a soak needs 10 s or more, not {seconds:g}")
    check_lab()
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(TemporaryDirectory(prefix="bench-soak-")))
        load_before = load()
        report = replace(
            run_soak(seconds, seed, Path(workdir).resolve()),
            commit=commit(), load_before=load_before, load_after=load(),
        )  # fmt: skip
    if json_path is not None:
        data = asdict(report) | {
            "passed": report.passed,
            "heal_summary": heal_summary(report.heals),
        }
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    return report


def _healthy(network: Network, view: lab.RegistryView) -> bool:
    try:
        return bool(network.probe(OBSERVER, "health", view.url, "--ca", view.ca).get("healthy"))
    except (RuntimeError, ValueError, subprocess.SubprocessError):
        return False
