"""A node agent given relative paths works from another working directory (issue 8):
NodeConfig makes them absolute where it receives them. The agent runs in this process
against a real registry, founds a group (real SuperLink, ServerApp, SuperNode) and trains.
Slow: real Flower processes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mycelium.client import RegistryClient, RegistryEndpoints
from mycelium.node.agent import NodeAgent
from mycelium.node.config import NodeConfig
from mycelium.node.status import STATUS_FILE
from mycelium.procs import wait_for
from tests.conftest import start_registry

pytestmark = pytest.mark.slow


def test_agent_with_relative_work_dir_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    with start_registry(tmp_path) as (url, _), RegistryClient(url) as reader:
        monkeypatch.chdir(first)
        cfg = NodeConfig(
            name="rel",
            registry=RegistryEndpoints.parse(url),
            clusters=2,
            partition_count=4,
            warmup_epochs=2,
            heartbeat_interval=1.0,
            status_interval=1.0,
            work_dir=Path("rel/node"),
        )
        monkeypatch.chdir(elsewhere)
        assert cfg.work_dir == first / "rel" / "node"
        stop, started = threading.Event(), []

        def run() -> None:
            agent = NodeAgent.start(cfg, stop_event=stop)
            if agent is not None:
                started.append(agent)
                agent.run()

        runner = threading.Thread(target=run, name="agent", daemon=True)
        runner.start()
        try:
            gid = wait_for(
                lambda: started and started[0].membership and started[0].membership.group_id,
                timeout=180,
                what="the agent founds and joins a group",
            )
            wait_for(lambda: reader.get_group(gid).round, timeout=180, what="a round")
        finally:
            stop.set()
            runner.join(timeout=60)
        assert not runner.is_alive()
    assert (cfg.work_dir / STATUS_FILE).is_file()
    assert (cfg.work_dir / "group" / "superlink.log").is_file()
    assert (cfg.work_dir / "supernode" / "rel.supernode.log").is_file()
    assert list(elsewhere.iterdir()) == [], "a child wrote relative to the later cwd"
