"""``bench faults``: issue 24's faults in their long forms, on the real stack in the
namespace lab (registry on HTTPS in ``reg``, node agents a0, b0, c0 on hostA, hostB, hostC,
real TLS Flower groups, the test timers), each scenario in a lab of its own:

* ``lossy``: the same 3-member group formed and trained twice, clean and then with a share
  of the packets (2%) dropped on every host's link from before the first agent starts
  (:func:`bench.net_bench.measure`): median round time and start to first round, beside
  each other.
* ``outage``: the registry hung (SIGSTOP) for ``--outage`` seconds with a group TTL of two
  thirds of that (the issue's 60 s over 40), then resumed: nothing failed, dissolved or
  left; when every node was heard again; the registry's answers in the window after the
  outage against the window before it, from its own ``/metrics``.
* ``partition``: a member's host (hostC) cut from the registry for two node TTLs while it
  reaches its group's host: the group is not failed, its node stays and trains (its round
  advances); after the heal, when its heartbeats arrive again.

Each scenario records its invariants and its figures (:mod:`bench.faults_report`); one that
cannot go on (a deadline passed, a fault could not be made) records why and the next runs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from bench import BenchError
from bench.faults_report import (
    HEARTBEAT_S,
    SCENARIOS,
    FaultsReport,
    Figures,
    LossyFigures,
    OutageFigures,
    PartitionFigures,
    Recorder,
    ScenarioResult,
    Settings,
    answered_between,
    commit,
    load,
    parse_scenarios,
    per_minute,
)
from bench.net_bench import measure, until
from mycelium.api import EventPublic, NodePublic
from mycelium.lab import stack as lab
from mycelium.lab.faults import Faults, unavailable_reason
from mycelium.lab.netns import Network
from mycelium.procs import ManagedProcess

MEMBERS = 3
AGENTS = (("hostA", "a0"), ("hostB", "b0"), ("hostC", "c0"))  # a0 founds; the view is hostB's
CUT = AGENTS[2]  # the partitioned member: not the group's host, not the view's host
FAILED = frozenset({"group_failed", "dissolved"})
LEFT = frozenset({"left", "evicted", "migrated"})
PARTITION_GROUP_TTL_S = 30.0


# -- the lab --------------------------------------------------------------------------------
def check_lab() -> None:
    """:class:`BenchError` with the reason when the lab cannot run here."""
    reason = unavailable_reason()
    if reason:
        raise BenchError(f"network namespaces or their fault tools unavailable: {reason}")
    if shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None:
        raise BenchError("nginx is not installed (TLS group hosts need it; Debian: nginx-light)")


@dataclass(frozen=True)
class Formed:
    network: Network
    view: lab.RegistryView
    registry: ManagedProcess
    gid: int


@contextmanager
def formed_group(work: Path, settings: Settings, group_ttl: float) -> Iterator[Formed]:
    """A lab with the registry (``settings.node_ttl_s``, ``group_ttl``) and a group of
    a0, b0, c0 founded by a0 that trained two rounds with all three."""
    with ExitStack() as stack:
        network = stack.enter_context(Network())
        view, _, registry = stack.enter_context(
            lab.https_registry(network, work, node_ttl=settings.node_ttl_s, group_ttl=group_ttl)
        )
        gid: int | None = None
        for index, (host, name) in enumerate(AGENTS):
            stack.enter_context(
                lab.agent_in(
                    network, host, work, view, name=name, cluster=0, index=index, seed=settings.seed
                )
            )
            if gid is None:
                gid = until(lambda: view.group_of("a0"), 300, "a0 founds a group")
        names = [name for _, name in AGENTS]
        until(lambda: all(view.group_of(n) == gid for n in names), 300, "b0 and c0 join a0")
        assert gid is not None
        group = gid
        until(lambda: len(view.full_rounds(group, MEMBERS)) >= 2, 300, "2 rounds of 3")
        yield Formed(network, view, registry, group)


def _sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def _node(nodes: list[NodePublic], name: str) -> NodePublic:
    return next(n for n in nodes if n.name == name)


def _types(events: list[EventPublic]) -> list[str]:
    return sorted({e.type for e in events})


# -- scenarios ----------------------------------------------------------------------------
def lossy(work: Path, settings: Settings, rec: Recorder) -> LossyFigures:
    clean = measure("tls", work / "clean", settings.rounds, seed=settings.seed)
    rec.check("clean: a group of 3 formed and trained", True, f"{settings.rounds} rounds timed")
    try:
        lost = measure(
            "tls", work / "lossy", settings.rounds, loss=settings.loss, seed=settings.seed
        )
    except BenchError as exc:
        rec.check(f"{settings.loss:.0%} loss: a group of 3 formed and trained", False, str(exc))
        return LossyFigures(settings.loss, clean, None, None)
    rec.check(
        f"{settings.loss:.0%} loss: a group of 3 formed and trained",
        True,
        f"{settings.rounds} rounds timed",
    )
    ratio = round(lost.median_round_s / clean.median_round_s, 2)
    return LossyFigures(settings.loss, clean, lost, ratio)


def outage(work: Path, settings: Settings, rec: Recorder) -> OutageFigures:
    group_ttl, window = settings.outage_group_ttl_s, settings.window_s
    names = [name for _, name in AGENTS]
    with formed_group(work, settings, group_ttl) as formed, Faults(formed.network, work) as lab_:
        view, gid = formed.view, formed.gid
        lab_.track(formed.registry)
        since = view.events()[-1].id
        first = view.text("/metrics")
        time.sleep(window)
        at_stop = view.text("/metrics")  # nothing else read from here on is left uncounted
        with lab_.hang("registry"):
            time.sleep(settings.outage_s)
        resumed = time.time()
        round_at_resume = view.group(gid).round or 0
        reads, heard = 1, dict[str, float]()

        def everyone_heard() -> bool:
            nonlocal reads
            reads += 1
            for node in view.nodes():
                if node.name in names and node.last_seen >= resumed:
                    heard.setdefault(node.name, node.last_seen)
            return len(heard) == len(names)

        try:
            until(everyone_heard, 2 * HEARTBEAT_S + 15, "every node heard", interval=0.2)
            heard_after: float | None = round(max(heard.values()) - resumed, 2)
        except BenchError as exc:
            heard_after = None
            rec.check("every node heartbeats again", False, str(exc))
        else:
            rec.check("every node heartbeats again", True, f"{heard_after:.2f} s after SIGCONT")
        _sleep_until(resumed + window)
        after_text = view.text("/metrics")
        before = answered_between(first, at_stop)
        after = answered_between(at_stop, after_text, own=reads)
        happened = view.events(since)
        group = view.group(gid)
        nodes = view.nodes()
    types = _types(happened)
    rec.check(
        "no group failed or dissolved",
        not FAILED & set(types) and group.status == "active" and group.alive,
        f"group {group.status}, alive {group.alive}; events {types}",
    )
    stayed = all(_node(nodes, n).group_id == gid and _node(nodes, n).alive for n in names)
    rec.check("no node left its group", stayed and not LEFT & set(types), f"events {types}")
    resumed_events = sum(e.type == "registry_resumed" for e in happened)
    rec.check("the registry saw its own outage once", resumed_events == 1, f"{resumed_events}")
    round_after = group.round or 0
    rec.check(
        "the group trained after it",
        round_after > round_at_resume,
        f"round {round_at_resume} at SIGCONT, {round_after} a window later",
    )
    rec.check(
        "no storm of retries (after <= 2 x before + 10)",
        after <= 2 * before + 10,
        f"{after} after, {before} before",
    )
    return OutageFigures(
        outage_s=settings.outage_s, node_ttl_s=settings.node_ttl_s, group_ttl_s=group_ttl,
        window_s=window, heard_after_s=heard_after,
        requests_before=before, requests_after=after,
        per_minute_before=per_minute(before, window), per_minute_after=per_minute(after, window),
        round_at_resume=round_at_resume, round_after=round_after, events=types,
    )  # fmt: skip


def partition(work: Path, settings: Settings, rec: Recorder) -> PartitionFigures:
    host, name = CUT
    cut_s = 2 * settings.node_ttl_s
    with formed_group(work, settings, PARTITION_GROUP_TTL_S) as formed:
        view, gid = formed.view, formed.gid
        since = view.events()[-1].id
        round_before = view.node_round(name)
        expired, group_kept = False, True
        with Faults(formed.network, work) as lab_, lab_.partition(host, "reg"):
            cut_at = time.time()
            while time.time() < cut_at + cut_s:
                expired = expired or not _node(view.nodes(), name).alive
                group = view.group(gid)
                group_kept = group_kept and group.status == "active" and group.alive
                time.sleep(0.5)
        healed = time.time()
        during = [r for r in view.group(gid).rounds if cut_at < r.reported_at <= healed]
        try:
            node = until(
                lambda: (n := _node(view.nodes(), name)).last_seen >= healed and n,
                2 * HEARTBEAT_S + 30,
                f"{name}'s heartbeat after the heal",
                interval=0.2,
            )
            heard: float | None = round(node.last_seen - healed, 2)
            round_after = node.round
        except BenchError:
            heard, round_after = None, None
        try:
            full = until(
                lambda: [r for r in view.full_rounds(gid, MEMBERS) if r.reported_at > healed],
                120,
                "a round of 3 after the heal",
            )
            full_after: float | None = round(min(r.reported_at for r in full) - healed, 1)
        except BenchError:
            full_after = None
        types = _types(view.events(since))
        group = view.group(gid)
        group_of = view.group_of(name)
    rec.check(
        "the group was not failed or dissolved",
        group_kept and not FAILED & set(types) and group.status == "active",
        f"active and alive throughout the cut: {group_kept}; events {types}",
    )
    rec.check(
        f"{name} stayed in its group", group_of == gid and not LEFT & set(types), f"{group_of}"
    )
    full_during = sum(r.num_nodes >= MEMBERS for r in during)
    rec.check(
        f"{name} kept training during the cut (its round advanced)",
        round_after is not None and round_before is not None and round_after > round_before,
        f"round {round_before} -> {round_after}; group rounds during the cut {len(during)}, "
        f"with all {MEMBERS}: {full_during}; {name} expired meanwhile: {expired}",
    )
    rec.check(
        f"{name}'s heartbeats resumed after the heal",
        heard is not None,
        "never" if heard is None else f"{heard:.2f} s after",
    )
    return PartitionFigures(
        host=host, node=name, cut_s=cut_s,
        node_ttl_s=settings.node_ttl_s, group_ttl_s=PARTITION_GROUP_TTL_S,
        node_round_before=round_before, node_round_after_heal=round_after,
        rounds_during_cut=len(during), full_rounds_during_cut=full_during,
        node_expired_during_cut=expired,
        heard_after_heal_s=heard, full_round_after_heal_s=full_after, events=types,
    )  # fmt: skip


Scenario = Callable[[Path, Settings, Recorder], Figures]
RUNNERS: dict[str, Scenario] = {"lossy": lossy, "outage": outage, "partition": partition}


def run_scenario(name: str, work: Path, settings: Settings) -> ScenarioResult:
    """One scenario in a lab of its own; what stopped it, if anything, is recorded."""
    rec = Recorder()
    started = time.monotonic()
    figures: Figures | None = None
    error = None
    try:
        figures = RUNNERS[name](work, settings, rec)
    except Exception as exc:  # noqa: BLE001 - a deadline, a fault, a probe: recorded, next
        error = f"{type(exc).__name__}: {exc}"
    seconds = round(time.monotonic() - started, 1)
    passed = error is None and all(c.passed for c in rec.checks)
    return ScenarioResult(name, passed, seconds, rec.checks, figures, error)


def run(
    *,
    settings: Settings,
    scenarios: Sequence[str] = SCENARIOS,
    json_path: Path | None = None,
    workdir: Path | None = None,
) -> FaultsReport:
    """Run ``scenarios`` one after the other; the report (also as JSON when asked)."""
    names = parse_scenarios(scenarios)
    check_lab()
    load_before, started = load(), time.monotonic()
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(TemporaryDirectory(prefix="bench-faults-")))
        results = [run_scenario(n, Path(workdir).resolve() / n, settings) for n in names]
    report = FaultsReport(
        commit(), load_before, load(), round(time.monotonic() - started, 1), settings, results
    )
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
