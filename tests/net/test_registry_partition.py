"""Issue 24's PostgreSQL scenario in short form, run by the bench's own code
(:mod:`bench.faults_registry`): two registry processes over one PostgreSQL in ``reg`` and
``reg2``, node agents given both URLs, every node host cut from the first with nftables
(silent drops) while the second stays reachable. Neither node placed before the cut reads
as expired, the group trains through the cut, a node started during it joins through the
second process, nothing fails, leaves or starts self-preservation, and a round of all
three follows the heal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults_registry
from bench.faults_report import Recorder, check_lines
from mycelium.lab.faults import unavailable_reason
from tests.net.conftest import needs_nginx
from tests.postgres import PgServer

pytestmark = [pytest.mark.slow, needs_nginx]


def test_nodes_cut_from_one_registry_process_carry_on_through_the_other(
    netns_reason: str | None, pg_server: PgServer, tmp_path: Path
) -> None:
    if netns_reason:
        pytest.skip(f"network namespaces unavailable: {netns_reason}")
    if reason := unavailable_reason():
        pytest.skip(f"lab faults unavailable: {reason}")
    rec = Recorder()
    figures = faults_registry.registry_partition_on(
        pg_server, tmp_path, rec, cut_s=2 * faults_registry.NODE_TTL_S
    )
    report = "\n".join(check_lines(rec.checks))
    print(report, figures, sep="\n")
    assert len(rec.checks) == 4 and all(c.passed for c in rec.checks), report
