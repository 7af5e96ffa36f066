"""Founding a group: what may heal is retried, what does not heal stops the agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.client import RegistryEndpoints
from mycelium.node.config import FatalNodeError, NodeConfig
from mycelium.node.hosting import MAX_FLOWER_FAILURES, Founder
from mycelium.procs import free_port
from tests.conftest import register_node, start_registry


def test_an_unreachable_registry_is_retried_without_limit(tmp_path: Path) -> None:
    cfg = NodeConfig(
        name="f",
        registry=RegistryEndpoints.parse(f"http://127.0.0.1:{free_port()}"),
        work_dir=tmp_path,
    )
    founder = Founder(cfg)
    for _ in range(MAX_FLOWER_FAILURES + 2):
        assert founder.found(node_token=None, seed_model=b"") is None
    assert founder.flower_failures == 0


def test_a_group_that_keeps_failing_to_start_stops_the_agent(tmp_path: Path) -> None:
    work = tmp_path / "node"
    work.mkdir()
    (work / "group").write_text("a file where the group's folder must go")
    with start_registry(tmp_path) as (url, _):
        node = register_node(url, name="f")
        founder = Founder(
            NodeConfig(name="f", registry=RegistryEndpoints.parse(url), work_dir=work)
        )
        try:
            for attempt in range(1, MAX_FLOWER_FAILURES):
                assert founder.found(node_token=node.creds.token, seed_model=b"") is None
                assert founder.flower_failures == attempt
            with pytest.raises(FatalNodeError, match=f"{MAX_FLOWER_FAILURES} times in a row"):
                founder.found(node_token=node.creds.token, seed_model=b"")
        finally:
            node.client.close()
