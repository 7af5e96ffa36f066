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
* ``host_partition``, ``mass_partition``, ``kill_lossy``: below, each with its docstring;
  ``registry_partition``: :mod:`bench.faults_registry` (two registry processes over
  PostgreSQL, the nodes cut from one).

Each scenario records its invariants and its figures (:mod:`bench.faults_report`); one that
cannot go on (a deadline passed, a fault could not be made) records why and the next runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from tempfile import TemporaryDirectory

from bench import BenchError
from bench.faults_lab import (
    AGENTS,
    CUT,
    FAILED,
    FOUR,
    LEFT,
    LOSSY_HOST,
    MASS_CUT,
    MEMBERS,
    PARTITION_GROUP_TTL_S,
    SP_ENDED,
    SP_STARTED,
    Formed,
    check_lab,
    event_types,
    formed_group,
    node_named,
    sleep_until,
)
from bench.faults_registry import registry_partition
from bench.faults_report import (
    EVALUATION_S,
    HEARTBEAT_S,
    SCENARIOS,
    FaultsReport,
    Figures,
    HostPartitionFigures,
    KillLossyFigures,
    LossyFigures,
    MassPartitionFigures,
    OutageFigures,
    PartitionFigures,
    Recorder,
    RestartFigures,
    ScenarioResult,
    Settings,
    answered_between,
    commit,
    load,
    parse_scenarios,
    per_minute,
    requests_answered,
)
from bench.net_bench import measure, until
from mycelium.lab import stack as lab
from mycelium.lab.faults import Faults


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
        heard_after, reads = _heard_after(view, names, resumed)
        _check_heard(rec, "every node heartbeats again", heard_after, "SIGCONT")
        sleep_until(resumed + window)
        after_text = view.text("/metrics")
        before = answered_between(first, at_stop)
        after = answered_between(at_stop, after_text, own=reads + 1)
        happened = view.events(since)
        group = view.group(gid)
        nodes = view.nodes()
        restart = killed_and_restarted(formed, lab_, settings, rec, before)
    types = event_types(happened)
    rec.check(
        "no group failed or dissolved",
        not FAILED & set(types) and group.status == "active" and group.alive,
        f"group {group.status}, alive {group.alive}; events {types}",
    )
    stayed = all(node_named(nodes, n).group_id == gid and node_named(nodes, n).alive for n in names)
    rec.check("no node left its group", stayed and not LEFT & set(types), f"events {types}")
    resumed_events = sum(e.type == "registry_resumed" for e in happened)
    rec.check("the registry saw its own outage once", resumed_events == 1, f"{resumed_events}")
    round_after = group.round or 0
    _check_recovery(rec, "SIGCONT", (round_at_resume, round_after), (before, after))
    return OutageFigures(
        outage_s=settings.outage_s, node_ttl_s=settings.node_ttl_s, group_ttl_s=group_ttl,
        window_s=window, heard_after_s=heard_after,
        requests_before=before, requests_after=after,
        per_minute_before=per_minute(before, window), per_minute_after=per_minute(after, window),
        round_at_resume=round_at_resume, round_after=round_after, events=types,
        restart=restart,
    )  # fmt: skip


def killed_and_restarted(
    formed: Formed, lab_: Faults, settings: Settings, rec: Recorder, before: int
) -> RestartFigures:
    """The outage's second form: the registry killed (-9) and, ``settings.outage_s``
    later, started again on the same port with the same database."""
    view, gid, window = formed.view, formed.gid, settings.window_s
    names = [name for _, name in AGENTS]
    lab_.track(formed.registry, ready=lambda: _serves(view))
    since = view.events()[-1].id
    listed = {n.node_id for n in view.nodes()}
    killed_at = time.time()
    lab_.kill("registry")
    time.sleep(settings.outage_s)
    lab_.restart("registry")
    served = time.time()
    round_at_restart = view.group(gid).round or 0
    heard, reads = _heard_after(view, names, served)
    _check_heard(rec, "after kill -9 and restart: every node heartbeats again", heard, "serving")
    sleep_until(served + window)
    after_text = view.text("/metrics")  # its counters started again with the process
    after = requests_answered(after_text) - reads - 1
    happened = view.events(since)
    types = event_types(happened)
    group = view.group(gid)
    kept = listed & {n.node_id for n in view.nodes()}
    stayed = all(view.group_of(n) == gid for n in names)
    causes = [e.data.get("cause") for e in happened if e.type == "registry_resumed"]
    rec.check(
        "after the restart: nothing failed, dissolved or left",
        stayed and not (FAILED | LEFT) & set(types) and group.status == "active",
        f"group {group.status}; events {types}",
    )
    rec.check("the restarted registry saw its own downtime", causes == ["restart"], f"{causes}")
    rec.check(
        "nothing acknowledged before the kill lost",
        kept == listed,
        f"{len(kept)} of {len(listed)} registrations listed again",
    )
    _check_recovery(rec, "the restart", (round_at_restart, group.round or 0), (before, after))
    return RestartFigures(
        down_s=round(served - killed_at, 1), heard_after_s=heard, requests_after=after,
        per_minute_after=per_minute(after, window), round_at_restart=round_at_restart,
        round_after=group.round or 0, nodes_before=len(listed), nodes_kept=len(kept),
        events=types,
    )  # fmt: skip


def restart_in(formed: Formed, work: Path, settings: Settings, rec: Recorder) -> RestartFigures:
    """The outage's kill -9 and restart half alone in a formed lab (the suite's short
    form): requests counted over ``settings.window_s`` before the kill, then
    :func:`killed_and_restarted`."""
    view = formed.view
    with Faults(formed.network, work) as lab_:
        first = view.text("/metrics")
        time.sleep(settings.window_s)
        before = answered_between(first, view.text("/metrics"))
        return killed_and_restarted(formed, lab_, settings, rec, before)


def _check_recovery(
    rec: Recorder, since: str, rounds: tuple[int, int], requests: tuple[int, int]
) -> None:
    """The group trained after ``since`` (round then, a window later) and the requests of
    the window after it (before, after) were no storm."""
    (then, later), (before, after) = rounds, requests
    rec.check(f"the group trained after {since}", later > then, f"round {then} -> {later}")
    rec.check(
        f"no storm of retries after {since} (after <= 2 x before + 10)",
        after <= 2 * before + 10,
        f"{after} after, {before} before",
    )


def _check_heard(rec: Recorder, name: str, heard: float | None, since: str) -> None:
    detail = "never" if heard is None else f"{heard:.2f} s after {since}"
    rec.check(name, heard is not None, detail)


def _serves(view: lab.RegistryView) -> bool:
    try:
        return bool(view.network.probe(view.host, "health", view.url, "--ca", view.ca)["healthy"])
    except (RuntimeError, KeyError, ValueError):
        return False


def _heard_after(
    view: lab.RegistryView, names: list[str], since: float
) -> tuple[float | None, int]:
    """Seconds from ``since`` until each of ``names`` heartbeated after it, and how many
    reads that took."""
    reads, heard = 0, dict[str, float]()

    def everyone_heard() -> bool:
        nonlocal reads
        reads += 1
        for node in view.nodes():
            if node.name in names and node.last_seen >= since:
                heard.setdefault(node.name, node.last_seen)
        return len(heard) == len(names)

    try:
        until(everyone_heard, 2 * HEARTBEAT_S + 15, "every node heard", interval=0.2)
    except BenchError:
        return None, reads
    return round(max(heard.values()) - since, 2), reads


def partition(work: Path, settings: Settings, rec: Recorder) -> PartitionFigures:
    with formed_group(work, settings, PARTITION_GROUP_TTL_S) as formed:
        return partition_in(formed, work, settings, rec, PARTITION_GROUP_TTL_S)


def partition_in(
    formed: Formed, work: Path, settings: Settings, rec: Recorder, group_ttl: float
) -> PartitionFigures:
    """:func:`partition` in a formed lab (c0 on hostC a member, not the host): hostC cut
    from the registry for two node TTLs."""
    host, name = CUT
    cut_s = 2 * settings.node_ttl_s
    view, gid = formed.view, formed.gid
    since = view.events()[-1].id
    round_before = view.node_round(name)
    expired, group_kept = False, True
    with Faults(formed.network, work) as lab_, lab_.partition(host, "reg"):
        cut_at = time.time()
        while time.time() < cut_at + cut_s:
            expired = expired or not node_named(view.nodes(), name).alive
            group = view.group(gid)
            group_kept = group_kept and group.status == "active" and group.alive
            time.sleep(0.5)
    healed = time.time()
    during = [r for r in view.group(gid).rounds if cut_at < r.reported_at <= healed]
    try:
        node = until(
            lambda: (n := node_named(view.nodes(), name)).last_seen >= healed and n,
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
    types = event_types(view.events(since))
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
        node_ttl_s=settings.node_ttl_s, group_ttl_s=group_ttl,
        node_round_before=round_before, node_round_after_heal=round_after,
        rounds_during_cut=len(during), full_rounds_during_cut=full_during,
        node_expired_during_cut=expired,
        heard_after_heal_s=heard, full_round_after_heal_s=full_after, events=types,
    )  # fmt: skip


def host_partition(work: Path, settings: Settings, rec: Recorder) -> HostPartitionFigures:
    with formed_group(work, settings, PARTITION_GROUP_TTL_S) as formed:
        return host_partition_in(formed, work, rec, PARTITION_GROUP_TTL_S)


def every_member_in_a_round(formed: Formed, what: str, timeout: float = 60.0) -> None:
    """Wait for a round of the group with every agent of the lab in it, reported from now on.
    A member the registry expired during an earlier cut is sampled again only once the group's
    host has heard that it is back; a fault on the host before that freezes it out of the
    rounds for the whole fault (seen once in the suite: c0 left out of rounds 6-12)."""
    start, size = time.time(), len(formed.agents)

    def complete() -> bool:
        return any(r.reported_at > start for r in formed.view.full_rounds(formed.gid, size))

    until(complete, timeout, what, interval=0.5)


def host_partition_in(
    formed: Formed, work: Path, rec: Recorder, group_ttl: float
) -> HostPartitionFigures:
    """The group's own host (hostA) cut from the registry for 1.5 group TTLs while its
    members reach both: their vouches keep the group; the host reports again after."""
    host = AGENTS[0][0]
    cut_s = 1.5 * group_ttl
    members = [name for _, name in AGENTS[1:]]
    view, gid = formed.view, formed.gid
    every_member_in_a_round(formed, "a round with every member before the host's cut")
    since = view.events()[-1].id
    rounds: dict[str, list[int | None]] = {n: [view.node_round(n)] for n in members}
    kept, silent = True, 0.0
    with Faults(formed.network, work) as lab_, lab_.partition(host, "reg"):
        cut_at = time.time()
        while time.time() < cut_at + cut_s:
            group = view.group(gid)
            kept = kept and group.status == "active" and group.alive
            silent = max(silent, time.time() - group.last_report)
            time.sleep(0.5)
        for name in members:
            rounds[name].append(view.node_round(name))
    healed = time.time()
    try:
        report = until(
            lambda: (last := view.group(gid).last_report) > healed and last,
            60,
            "the host reports again",
            interval=0.5,
        )
        reported: float | None = round(report - healed, 1)
    except BenchError:
        reported = None
    types = event_types(view.events(since))
    group = view.group(gid)
    stayed = all(view.group_of(n) == gid for n in members)
    rec.check(
        "the group was never failed (members vouched)",
        kept and not FAILED & set(types) and group.status == "active",
        f"active and alive throughout: {kept}; host silent up to {silent:.1f} s "
        f"(group TTL {group_ttl:g}); events {types}",
    )
    rec.check("no member left", stayed and not LEFT & set(types), f"events {types}")
    rec.check(
        "rounds went on during the cut",
        all((r[1] or 0) > (r[0] or 0) for r in rounds.values()),
        f"{rounds}",
    )
    rec.check(
        "the host's reports resumed after the heal",
        reported is not None,
        "never" if reported is None else f"{reported:.1f} s after",
    )
    return HostPartitionFigures(host, cut_s, group_ttl, round(silent, 1), rounds, reported, types)


def mass_partition(work: Path, settings: Settings, rec: Recorder) -> MassPartitionFigures:
    """Half the hosts (hostC, hostD) cut from the registry at once, for three node TTLs."""
    with formed_group(work, settings, PARTITION_GROUP_TTL_S, FOUR, len(FOUR)) as formed:
        return mass_partition_in(formed, work, settings, rec)


def mass_partition_in(
    formed: Formed, work: Path, settings: Settings, rec: Recorder
) -> MassPartitionFigures:
    """:func:`mass_partition` in a formed lab of :data:`FOUR`: self-preservation starts,
    nothing is evicted, it ends after the heal."""
    view, gid = formed.view, formed.gid
    names = [name for _, name in FOUR]
    cut_nodes = [name for host, name in FOUR if host in MASS_CUT]
    cut_s = 3 * settings.node_ttl_s
    since = view.events()[-1].id
    held, expired = False, set[str]()
    with Faults(formed.network, work) as lab_:
        made = [lab_.partition(host, "reg") for host in MASS_CUT]
        cut_at = time.time()
        while time.time() < cut_at + cut_s:
            held = held or view.health().self_preservation
            expired |= {n.name for n in view.nodes() if n.name in names and not n.alive}
            time.sleep(0.5)
        for applied in made:
            applied.undo()
    healed = time.time()
    try:
        ended = until(
            lambda: next((e for e in view.events(since) if e.type == SP_ENDED), None),
            4 * settings.node_ttl_s + 30,
            "self-preservation ends",
            interval=0.5,
        )
    except BenchError:
        ended = None
    happened = view.events(since)
    types = event_types(happened)
    started = next((e for e in happened if e.type == SP_STARTED), None)
    stayed = all(view.group_of(n) == gid for n in names)
    health = view.health()
    rec.check(
        "self-preservation started during the cut",
        started is not None and cut_at <= started.at <= healed and held,
        f"/health said so: {held}; events {types}",
    )
    rec.check(
        "nothing evicted, failed, dissolved or left",
        stayed and not (FAILED | LEFT) & set(types),
        f"everyone in group {gid}: {stayed}; shown not alive at some read: {sorted(expired)}",
    )
    rec.check(
        "self-preservation ended after the heal",
        ended is not None and ended.at >= healed and not health.self_preservation,
        "never" if ended is None else f"{ended.at - healed:.1f} s after ({ended.data})",
    )
    return MassPartitionFigures(
        hosts_cut=list(MASS_CUT), nodes_cut=cut_nodes, cut_s=cut_s,
        started_after_cut_s=None if started is None else round(started.at - cut_at, 1),
        lost=None if started is None else started.data.get("lost"),
        of=None if started is None else started.data.get("of"),
        expired_during_cut=sorted(expired),
        ended_after_heal_s=None if ended is None else round(ended.at - healed, 1),
        end_reason=None if ended is None else ended.data.get("reason"), events=types,
    )  # fmt: skip


def kill_lossy(work: Path, settings: Settings, rec: Recorder) -> KillLossyFigures:
    """The group's host (a0's agent) killed (-9) while c0's host drops 2% of its packets."""
    with formed_group(work, settings, PARTITION_GROUP_TTL_S) as formed:
        return kill_lossy_in(formed, work, settings, rec, PARTITION_GROUP_TTL_S)


def kill_lossy_in(
    formed: Formed, work: Path, settings: Settings, rec: Recorder, group_ttl: float
) -> KillLossyFigures:
    """:func:`kill_lossy` in a formed lab: the members re-home within ``group_ttl`` plus
    two evaluation intervals."""
    view, gid = formed.view, formed.gid
    members = [name for name in formed.agents if name != "a0"]
    bound = group_ttl + 2 * EVALUATION_S
    since = view.events()[-1].id
    homes: dict[str, float] = {}
    with Faults(formed.network, work) as lab_, lab_.loss(LOSSY_HOST, settings.loss):
        killed_at = time.time()
        lab.crash(formed.agents["a0"])

        def rehomed() -> bool:
            live = {g.group_id for g in view.groups() if g.status == "active" and g.alive}
            for node in view.nodes():
                if node.name in members and node.alive and node.group_id in live - {gid}:
                    homes.setdefault(node.name, round(time.time() - killed_at, 1))
            return len(homes) == len(members)

        try:
            until(rehomed, bound + 60, "the members re-home", interval=0.5)
        except BenchError:
            pass
        trained = _trained_after(view, members, killed_at, 90)
        types = event_types(view.events(since))
        old = view.group(gid).status
    worst = max(homes.values(), default=None)
    rec.check(
        f"the members re-homed within --group-ttl + 2 evaluation intervals ({bound:g} s)",
        len(homes) == len(members) and worst is not None and worst <= bound,
        f"{homes}",
    )
    rec.check(
        "their new group trained",
        trained is not None,
        "never" if trained is None else f"{trained:.1f} s after the kill",
    )
    return KillLossyFigures(
        killed="a0", lossy_host=LOSSY_HOST, loss=settings.loss, group_ttl_s=group_ttl,
        bound_s=bound, rehomed_s={n: homes.get(n) for n in members}, trained_after_s=trained,
        old_group_status=old, events=types,
    )  # fmt: skip


def _trained_after(
    view: lab.RegistryView, names: list[str], since: float, timeout: float
) -> float | None:
    """Seconds from ``since`` until every group of ``names`` reported a round after it."""

    def trained() -> float | None:
        gids = {n.group_id for n in view.nodes() if n.name in names and n.alive}
        if None in gids:
            return None
        stamps = []
        for gid in gids:
            after = [
                r.reported_at for r in view.group(int(gid or 0)).rounds if r.reported_at > since
            ]
            if not after:
                return None
            stamps.append(min(after))
        return max(stamps) - since

    try:
        return round(float(until(trained, timeout, "the new group trains", interval=1.0)), 1)
    except BenchError:
        return None


Scenario = Callable[[Path, Settings, Recorder], Figures]
RUNNERS: dict[str, Scenario] = {
    "lossy": lossy, "outage": outage, "partition": partition, "host_partition": host_partition,
    "mass_partition": mass_partition, "kill_lossy": kill_lossy,
    "registry_partition": registry_partition,
}  # fmt: skip


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
