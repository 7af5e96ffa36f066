"""Issue 24, item 3: the chaos soak's short form (``bench faults --soak 600 --seed N`` is
the long one): six node agents on four hosts, seeded random faults (loss, partitions, half
the hosts cut, a node cut from its group, the registry hung or killed and restarted, a host
killed under loss, an agent hung) for two minutes, every invariant checked at each read and
at the end by the bench's own code (:mod:`bench.faults_soak`); any violation fails here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import faults_soak
from mycelium.lab.faults import unavailable_reason
from tests.net.conftest import needs_nginx

pytestmark = [pytest.mark.slow, needs_nginx]

SECONDS = float(os.environ.get("MYCELIUM_SOAK_S", 120))
SEED = int(os.environ.get("MYCELIUM_SOAK_SEED", 1))


def test_a_chaos_soak_keeps_every_invariant(tmp_path: Path) -> None:
    if reason := unavailable_reason():
        pytest.skip(f"lab faults unavailable: {reason}")
    report = faults_soak.run_soak(SECONDS, SEED, tmp_path)
    summary = faults_soak.format_soak(report)
    print(summary)
    assert report.faults, summary
    assert report.passed, summary
