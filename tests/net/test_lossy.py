"""Issue 24's lossy links in short form, by the bench's own code (``bench faults --scenario
lossy`` runs it long, beside a clean run): 2% of the packets dropped each way on every
host's link (registry's included) from before the first agent starts; a group of three
still forms over TLS and trains rounds with all three."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import net_bench
from mycelium.lab.faults import unavailable_reason
from tests.net.conftest import needs_nginx

pytestmark = [pytest.mark.slow, needs_nginx]


def test_a_group_forms_and_trains_with_two_percent_loss_on_every_link(tmp_path: Path) -> None:
    if reason := unavailable_reason():
        pytest.skip(f"lab faults unavailable: {reason}")
    figures = net_bench.measure("tls", tmp_path, 1, loss=0.02)
    print(figures)
    assert len(figures.round_times_s) == 1 and figures.round_times_s[0] > 0, figures
