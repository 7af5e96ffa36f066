"""What ``bench faults`` measured (:mod:`bench.faults_bench` runs the scenarios): its
settings, each scenario's checks and typed figures, the report printed and written as JSON,
and the pure parts (scenario names, requests counted from the registry's ``/metrics``).
Frozen dataclasses throughout; JSON is ``dataclasses.asdict`` of :class:`FaultsReport`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.net_bench import NetFigures
from mycelium.launch import FAST_TIMERS

SCENARIOS = (
    "lossy", "outage", "partition", "host_partition", "mass_partition", "kill_lossy",
    "registry_partition",
)  # fmt: skip
HEARTBEAT_S = float(FAST_TIMERS["heartbeat_interval"])
EVALUATION_S = float(FAST_TIMERS["group_evaluation_interval"])
RESPONSES = "mycelium_http_responses_total{"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    """What ``bench faults`` was asked for (its options; their defaults are the CLI's)."""

    rounds: int
    """lossy: rounds timed, clean and lossy."""
    loss: float
    """lossy: the share of packets dropped on every host's link, each way."""
    outage_s: float
    """outage: how long the registry stays hung."""
    window_s: float
    """outage: the window in which requests are counted, before the stop and after it."""
    node_ttl_s: float
    """The registry's node TTL (outage, partition); the partition lasts two."""
    seed: int
    """The node agents' seed (data split and model)."""

    def __post_init__(self) -> None:
        if self.rounds < 1 or not 0.0 < self.loss < 1.0:
            raise BenchError(f"need rounds >= 1 and 0 < loss < 1, not {self.rounds}, {self.loss}")
        if min(self.outage_s, self.window_s, self.node_ttl_s) <= 0:
            raise BenchError("outage, window and node TTL must be positive")

    @property
    def outage_group_ttl_s(self) -> float:
        """The outage's group TTL: two thirds of the outage (the issue's 60 s over 40)."""
        return max(10.0, round(self.outage_s * 2 / 3, 1))


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class LossyFigures:
    loss: float
    clean: NetFigures
    lossy: NetFigures | None
    median_round_ratio: float | None  # lossy / clean


@dataclass(frozen=True)
class OutageFigures:
    outage_s: float
    node_ttl_s: float
    group_ttl_s: float
    window_s: float
    heard_after_s: float | None  # from SIGCONT until every node's heartbeat arrived
    requests_before: int  # answers in the window before the stop (scrapes left out)
    requests_after: int  # ... in the window from SIGCONT (the bench's own reads left out)
    per_minute_before: float
    per_minute_after: float
    round_at_resume: int
    round_after: int  # a window after SIGCONT
    events: list[str]
    restart: RestartFigures | None = None  # the second outage: kill -9, restart, same port


@dataclass(frozen=True)
class RestartFigures:
    down_s: float  # from SIGKILL to the restarted registry serving
    heard_after_s: float | None  # from serving again until every node's heartbeat arrived
    requests_after: int  # answers in the window from the restart (the bench's reads left out)
    per_minute_after: float
    round_at_restart: int
    round_after: int
    nodes_before: int  # registrations the registry listed before the kill
    nodes_kept: int  # of them, listed after the restart
    events: list[str]


@dataclass(frozen=True)
class HostPartitionFigures:
    host: str
    cut_s: float
    group_ttl_s: float
    host_silent_max_s: float  # the longest the registry went without the host's report
    member_rounds: dict[str, list[int | None]]  # member -> [round at the cut, at its end]
    host_report_after_heal_s: float | None
    events: list[str]


@dataclass(frozen=True)
class MassPartitionFigures:
    hosts_cut: list[str]
    nodes_cut: list[str]
    cut_s: float
    started_after_cut_s: float | None
    lost: int | None  # what self_preservation_started counted: lost of ...
    of: int | None
    expired_during_cut: list[str]  # nodes the registry showed not alive at some read
    ended_after_heal_s: float | None
    end_reason: str | None
    events: list[str]


@dataclass(frozen=True)
class KillLossyFigures:
    killed: str
    lossy_host: str
    loss: float
    group_ttl_s: float
    bound_s: float  # --group-ttl + 2 evaluation intervals
    rehomed_s: dict[str, float | None]  # member -> seconds from the kill to a live new group
    trained_after_s: float | None  # from the kill to a round of the members' new group(s)
    old_group_status: str
    events: list[str]


@dataclass(frozen=True)
class PartitionFigures:
    host: str
    node: str
    cut_s: float
    node_ttl_s: float
    group_ttl_s: float
    node_round_before: int | None
    node_round_after_heal: int | None  # what its first heartbeat after the heal reported
    rounds_during_cut: int
    full_rounds_during_cut: int  # of them, rounds with all 3 members
    node_expired_during_cut: bool  # the registry showed it not alive at some point
    heard_after_heal_s: float | None
    full_round_after_heal_s: float | None
    events: list[str]


@dataclass(frozen=True)
class RegistryPartitionFigures:
    cut_s: float  # every node host cut from registry0 (registry1 reachable)
    node_ttl_s: float
    group_ttl_s: float
    client_timeout_s: float  # what a silently dropped request costs before failover
    longest_silence_s: dict[str, float]  # node -> longest unheard while placed (registry1)
    late_join_s: float | None  # c0, started at the cut: seconds until it was in the group
    rounds_during_cut: int
    full_round_after_heal_s: float | None
    events: list[str]


Figures = (
    LossyFigures | OutageFigures | PartitionFigures | HostPartitionFigures
    | MassPartitionFigures | KillLossyFigures | RegistryPartitionFigures
)  # fmt: skip


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    passed: bool
    seconds: float
    checks: list[Check]
    figures: Figures | None
    error: str | None = None


@dataclass(frozen=True)
class FaultsReport:
    commit: str | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    wall_s: float
    settings: Settings
    scenarios: list[ScenarioResult]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scenarios)


@dataclass
class Recorder:
    """The checks a scenario made so far (kept when it stops half-way)."""

    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return passed


# -- pure parts ---------------------------------------------------------------------------
def parse_scenarios(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--scenario`` values (repeated, or comma lists) in the order given, once each;
    none: every scenario."""
    names = [n.strip() for v in values or () for n in v.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise BenchError(f"unknown scenario(s) {', '.join(unknown)}; use {', '.join(SCENARIOS)}")
    return tuple(dict.fromkeys(names)) or SCENARIOS


def requests_answered(metrics: str) -> int:
    """Answers the registry gave so far, by its ``/metrics`` text (scrapes left out)."""
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(RESPONSES) and 'route="/metrics"' not in line
        )
    )


def answered_between(first: str, second: str, *, own: int = 0) -> int:
    """Answers between two ``/metrics`` snapshots, less ``own`` requests of the reader."""
    return requests_answered(second) - requests_answered(first) - own


def per_minute(requests: int, seconds: float) -> float:
    return round(requests * 60.0 / seconds, 1)


def commit() -> str | None:
    """The checkout's short commit, ``+`` when it has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+" if dirty else "")


def load() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


# -- printing -----------------------------------------------------------------------------
def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(v, f"{prefix}{k} ")]
    if isinstance(value, list | tuple):
        shown = ", ".join(str(v) for v in value) or "none"
    elif value is None:
        shown = "-"
    else:
        shown = str(value)
    return [(prefix.strip().replace("_", " "), shown)]


def check_lines(checks: Sequence[Check]) -> list[str]:
    """One line per check: ``pass: NAME (DETAIL)`` or ``FAIL: ...``."""
    return [
        f"{'pass' if c.passed else 'FAIL'}: {c.name}" + (f" ({c.detail})" if c.detail else "")
        for c in checks
    ]


def format_report(report: FaultsReport) -> str:
    s = report.settings
    minutes, seconds = divmod(round(report.wall_s), 60)
    lines = [
        f"bench faults: commit {report.commit or '?'}; load {report.load_before} before, "
        f"{report.load_after} after; wall time {minutes} min {seconds} s",
        f"fast timers (heartbeat {HEARTBEAT_S:.0f} s), node TTL {s.node_ttl_s:g} s, seed {s.seed}",
    ]
    for result in report.scenarios:
        verdict = "pass" if result.passed else "FAIL"
        lines += ["", f"## {result.name}: {verdict} ({result.seconds:.0f} s)"]
        lines += [f"- {line}" for line in check_lines(result.checks)]
        if result.error:
            lines.append(f"- stopped: {result.error}")
        if result.figures is not None:
            lines += ["", "| figure | value |", "| --- | ---: |"]
            lines += [f"| {k} | {v} |" for k, v in _flat(asdict(result.figures))]
    return "\n".join(lines)
