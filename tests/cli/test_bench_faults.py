"""``bench faults``'s wiring and pure parts (the scenarios themselves run only as the bench:
``python mycelium_net.py bench faults``, minutes of real processes in namespaces)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from bench import BenchError, faults_lab, faults_soak
from bench.faults_report import (
    SCENARIOS,
    Check,
    FaultsReport,
    OutageFigures,
    ScenarioResult,
    Settings,
    answered_between,
    format_report,
    parse_scenarios,
    per_minute,
    requests_answered,
)
from mycelium.dashboard.metrics import RequestCollector
from mycelium_net import app

runner = CliRunner()
SETTINGS = Settings(rounds=3, loss=0.02, outage_s=60, window_s=60, node_ttl_s=5, seed=0)


def test_help_lists_the_options() -> None:
    result = runner.invoke(app, ["bench", "faults", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--scenario", "--outage", "--seed", "--json", "--window", "--loss", "--soak"):
        assert option in result.output


def test_an_unknown_scenario_is_one_line_and_exit_1() -> None:
    result = runner.invoke(app, ["bench", "faults", "--scenario", "outage,flood"])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "error: unknown scenario(s) flood; use lossy, outage, partition, host_partition, "
        "mass_partition, kill_lossy, registry_partition"
    ]


def test_without_the_lab_it_says_why_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults_lab, "unavailable_reason", lambda: "no root here")
    result = runner.invoke(app, ["bench", "faults", "--scenario", "outage"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: network namespaces or their fault tools unavailable: no root here"
    ]


@pytest.mark.parametrize(
    ("given", "names"),
    [
        (None, SCENARIOS),
        ([], SCENARIOS),
        (["partition"], ("partition",)),
        (["outage, partition", "outage"], ("outage", "partition")),
        (["partition", "lossy"], ("partition", "lossy")),
    ],
)
def test_scenario_names(given: list[str] | None, names: tuple[str, ...]) -> None:
    assert parse_scenarios(given) == names


def test_settings_refuse_what_cannot_be_measured() -> None:
    with pytest.raises(BenchError):
        Settings(rounds=3, loss=1.0, outage_s=60, window_s=60, node_ttl_s=5, seed=0)
    assert SETTINGS.outage_group_ttl_s == 40.0  # the 60 s over 40


def _metrics(calls: dict[tuple[str, str, int], int]) -> str:
    """The registry's own exposition of ``calls`` (method, route, status) -> count."""
    collector = RequestCollector()
    for (method, route, status), count in calls.items():
        for _ in range(count):
            collector.observe(method, route, status, 0.01)
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_requests_are_counted_from_two_metrics_snapshots() -> None:
    beat = ("POST", "/nodes/{node_id}/heartbeat", 200)
    scrape = ("GET", "/metrics", 200)
    first = _metrics({beat: 10, scrape: 1, ("GET", "/groups", 200): 2})
    second = _metrics({beat: 70, scrape: 2, ("GET", "/groups", 200): 5, ("GET", "/nodes", 503): 4})
    assert requests_answered(first) == 12  # scrapes are not counted
    assert answered_between(first, second) == 60 + 3 + 4
    assert answered_between(first, second, own=4) == 63  # the bench's own reads
    assert per_minute(63, 30.0) == 126.0


def test_the_report_prints_and_is_json() -> None:
    figures = OutageFigures(
        outage_s=60, node_ttl_s=5, group_ttl_s=40, window_s=60, heard_after_s=0.02,
        requests_before=239, requests_after=272, per_minute_before=239.0,
        per_minute_after=272.0, round_at_resume=3, round_after=15, events=["registry_resumed"],
    )  # fmt: skip
    checks = [Check("no group failed or dissolved", True), Check("no storm", False, "x")]
    result = ScenarioResult("outage", False, 212.0, checks, figures)
    report = FaultsReport("abc1234", (1.0, 0.9, 0.8), (1.2, 1.0, 0.9), 480.0, SETTINGS, [result])
    text = format_report(report)
    assert "commit abc1234" in text and "wall time 8 min 0 s" in text
    assert "## outage: FAIL (212 s)" in text and "- FAIL: no storm (x)" in text
    assert "| requests after | 272 |" in text
    written = json.loads(json.dumps(asdict(report)))
    assert written["scenarios"][0]["figures"]["requests_after"] == 272
    assert not report.passed


def test_soak_faults_are_drawn_from_the_seed() -> None:
    one, two = random.Random(3), random.Random(3)
    assert [faults_soak.draw(one) for _ in range(20)] == [faults_soak.draw(two) for _ in range(20)]
    rng = random.Random(1)
    drawn = [faults_soak.draw(rng) for _ in range(200)]
    assert {f.kind for f in drawn} == set(faults_soak.KINDS)
    for fault in drawn:
        low, high = faults_soak.HOLD_S
        assert low <= fault.hold_s <= high
        if fault.kind == "mass_partition":
            assert len(set(fault.targets)) == len(faults_soak.HOSTS) // 2
        if fault.kind in ("group_cut", "host_kill"):
            assert fault.targets[0] != fault.targets[1]


def test_the_heal_bound_is_said_from_the_timers() -> None:
    # node TTL 5 + group TTL 20 + 2 evaluations of 4 + cooldown 8 + first round 30
    assert faults_soak.heal_bound() == 71.0


def _soak_report(invariants: faults_soak.Invariants, heal: float | None) -> faults_soak.SoakReport:
    heals = [
        faults_soak.Heal("loss(hostA) 5 s", "loss", 3.0),
        faults_soak.Heal("loss(hostB) 9 s", "loss", 5.0),
        faults_soak.Heal("registry_kill(registry) 7 s", "registry_kill", heal),
    ]
    return faults_soak.SoakReport(
        seed=2, seconds=120, nodes=6, hosts=4, formed_s=50, bound_s=71.0,
        faults=[h.fault for h in heals], heals=heals, invariants=invariants,
    )  # fmt: skip


def test_the_soak_summary_names_each_invariant_and_heal_times() -> None:
    report = _soak_report(faults_soak.Invariants(reads=40, integrity="ok"), 12.0)
    assert report.passed
    text = faults_soak.format_soak(report)
    assert text.splitlines()[0].startswith("soak seed 2: 120 s, 3 faults, 6 nodes on 4 hosts")
    assert "loss: 2, 4.0, 5.0; registry_kill: 1, 12.0, 12.0" in text
    assert "integrity_check: ok" in text


@pytest.mark.parametrize(
    "broken",
    [
        {"one_group": ["a0 runs 2 SuperNodes"]},
        {"rounds_back": ["group 1 round 5 -> 3"]},
        {"left_processes": ["pid 9: flower-supernode"]},
        {"lost_writes": ["group 4"]},
        {"integrity": "*** in database main ***"},
        {"exited": ["c1 exited 1"]},
        {"error": "FaultError: process 'a0' is not running"},
    ],
)
def test_any_broken_invariant_fails_the_soak(broken: dict[str, object]) -> None:
    invariants = faults_soak.Invariants(reads=40, integrity="ok")
    for key, value in broken.items():
        setattr(invariants, key, value)
    report = _soak_report(invariants, 12.0)
    assert not report.passed
    assert "FAIL" in faults_soak.format_soak(report)


def test_a_heal_that_never_came_fails_the_soak() -> None:
    report = _soak_report(faults_soak.Invariants(reads=40, integrity="ok"), None)
    assert not report.passed
    assert "registry_kill: 1, -, -" in faults_soak.format_soak(report)


def test_a_soak_shorter_than_10_s_is_refused_in_one_line() -> None:
    result = runner.invoke(app, ["bench", "faults", "--soak", "3"])
    assert result.exit_code != 0
    assert "--soak" in result.output
