"""Issue 25's twelve-node settle test, through ``bench scale``'s core: the real registry,
twelve node agents and their Flower groups on loopback, two latent clusters. Measured at
123 s on the 2-core machine (commit 6c9afca, load 4.7 -> 7.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scale_bench

pytestmark = pytest.mark.slow

KINDS = {"agent", "supernode", "superlink", "serverapp", "registry"}


def test_twelve_nodes_settle_into_pure_groups_and_every_cost_is_measured(
    tmp_path: Path,
) -> None:
    table = scale_bench.run(nodes=[12], json_path=tmp_path / "scale.json", workdir=tmp_path)
    (result,) = json.loads((tmp_path / "scale.json").read_text())["results"]
    assert result["settled_s"] is not None, table  # within the default 216 s
    assert result["final_purity"] == 1.0 and result["groups"] >= 2, table
    assert KINDS <= set(result["peak_pss_mb_by_kind"]), table
    assert all(result["peak_pss_mb_by_kind"][k] > 0 for k in KINDS), table
    assert "superexec" not in result["peak_pss_mb_by_kind"], table  # serverapp_exec's work
    assert result["model_gets_200"] > 0 and result["median_round_s"] is not None, table
    assert result["routes"]["POST /nodes/{node_id}/heartbeat"]["requests_per_s"] > 0, table
    assert result["cpu_s_per_node_min"] > 0, table
