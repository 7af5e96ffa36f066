"""Issue 24, item 3: two of ``bench faults``'s scenarios in short form, in one lab of four
hosts (a0 founds, b0, c0, d0 join; registry on HTTPS, TLS groups), run by the bench's own
code (:mod:`bench.faults_bench`) so that the suite and the bench check the same things:

* mass partition: hostC and hostD (half the hosts) cut from the registry for three node
  TTLs: self-preservation starts, nothing is evicted, failed or left, it ends after the heal;
* then the group's host (a0) killed with -9 while hostC drops 2% of its packets: b0, c0
  and d0 re-home within ``--group-ttl`` plus two evaluation intervals and train again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults_bench
from bench.faults_report import Recorder, Settings
from mycelium.lab.faults import unavailable_reason
from tests.net.conftest import needs_nginx

pytestmark = [pytest.mark.slow, needs_nginx]

GROUP_TTL = 20.0
SETTINGS = Settings(rounds=3, loss=0.02, outage_s=60, window_s=60, node_ttl_s=5, seed=0)


def _report(rec: Recorder) -> str:
    return "\n".join(f"{'pass' if c.passed else 'FAIL'}: {c.name} ({c.detail})" for c in rec.checks)


def test_mass_partition_then_the_host_killed_under_loss(tmp_path: Path) -> None:
    if reason := unavailable_reason():
        pytest.skip(f"lab faults unavailable: {reason}")
    four = faults_bench.FOUR
    mass, killed = Recorder(), Recorder()
    with faults_bench.formed_group(tmp_path, SETTINGS, GROUP_TTL, four, len(four)) as formed:
        figures = faults_bench.mass_partition_in(formed, tmp_path, SETTINGS, mass)
        print(_report(mass), figures, sep="\n")
        assert all(c.passed for c in mass.checks), _report(mass)
        rehome = faults_bench.kill_lossy_in(formed, tmp_path, SETTINGS, killed, GROUP_TTL)
        print(_report(killed), rehome, sep="\n")
    assert killed.checks and all(c.passed for c in killed.checks), _report(killed)
    assert figures.lost is not None and figures.lost >= 2
