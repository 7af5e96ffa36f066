"""Issue 24, item 3: five of ``bench faults``'s scenarios in short form, in one lab of four
hosts (a0 founds, b0, c0, d0 join; registry on HTTPS, TLS groups), run by the bench's own
code (:mod:`bench.faults_bench`) so that the suite and the bench check the same things:

* partition: c0's host cut from the registry for two node TTLs while it reaches its group:
  the group is not failed, c0 stays and trains, its heartbeats resume after the heal;
* host partition: the group's own host (a0's, hostA) cut from the registry for 1.5 group
  TTLs while its members reach both: they vouch for it, it is never failed, nobody leaves,
  their rounds advance, the host reports again after the heal;
* mass partition: hostC and hostD (half the hosts) cut from the registry for three node
  TTLs: self-preservation starts, nothing is evicted, failed or left, it ends after the heal;
* the registry killed with -9, down 8 s, restarted on the same port and database: every
  node heard again, nothing failed, dissolved or left, nothing acknowledged lost, no storm;
* then the group's host (a0) killed with -9 while hostC drops 2% of its packets: b0, c0
  and d0 re-home within ``--group-ttl`` plus two evaluation intervals and train again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults_bench, faults_lab
from bench.faults_report import Recorder, Settings, check_lines
from mycelium.lab.faults import unavailable_reason
from tests.net.conftest import needs_nginx

pytestmark = [pytest.mark.slow, needs_nginx]

GROUP_TTL = 20.0
SETTINGS = Settings(rounds=3, loss=0.02, outage_s=8, window_s=6, node_ttl_s=5, seed=0)


def _report(rec: Recorder) -> str:
    return "\n".join(check_lines(rec.checks))


def test_partitions_a_registry_restart_then_the_host_killed_under_loss(tmp_path: Path) -> None:
    if reason := unavailable_reason():
        pytest.skip(f"lab faults unavailable: {reason}")
    four = faults_lab.FOUR
    cut, host, mass, restart, killed = (Recorder() for _ in range(5))
    with faults_lab.formed_group(tmp_path, SETTINGS, GROUP_TTL, four, len(four)) as formed:
        one = faults_bench.partition_in(formed, tmp_path, SETTINGS, cut, GROUP_TTL)
        print(_report(cut), one, sep="\n")
        assert len(cut.checks) == 4 and all(c.passed for c in cut.checks), _report(cut)
        vouched = faults_bench.host_partition_in(formed, tmp_path, host, GROUP_TTL)
        print(_report(host), vouched, sep="\n")
        assert len(host.checks) == 4 and all(c.passed for c in host.checks), _report(host)
        assert vouched.host_silent_max_s > GROUP_TTL  # the host was silent: members kept it
        figures = faults_bench.mass_partition_in(formed, tmp_path, SETTINGS, mass)
        print(_report(mass), figures, sep="\n")
        assert all(c.passed for c in mass.checks), _report(mass)
        restarted = faults_bench.restart_in(formed, tmp_path, SETTINGS, restart)
        print(_report(restart), restarted, sep="\n")
        assert len(restart.checks) == 6 and all(c.passed for c in restart.checks), _report(restart)
        rehome = faults_bench.kill_lossy_in(formed, tmp_path, SETTINGS, killed, GROUP_TTL)
        print(_report(killed), rehome, sep="\n")
    assert killed.checks and all(c.passed for c in killed.checks), _report(killed)
    assert figures.lost is not None and figures.lost >= 2
