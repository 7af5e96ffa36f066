"""NodeAgent unit tests, driven by its injectable clock and registry client.

The registry is the real app in-process (TestClient) or a real registry process; the
agent is real (data, warm trainer, policy). Its ``registry`` (only the groups it would
found use it) points at a closed port, so founding fails the way a registry outage makes
it fail, and no Flower process starts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mycelium.client import RegistryClient, RegistryEndpoints
from mycelium.flower.protocol import SuperNodeConfig
from mycelium.flower.supernode import SuperNode
from mycelium.learning.personal import ENSEMBLES
from mycelium.node.agent import REHOME_RETRY_S, NodeAgent
from mycelium.node.config import FatalNodeError, NodeConfig
from mycelium.node.membership import Membership
from mycelium.node.status import STATUS_FILE
from mycelium.procs import free_port
from tests.conftest import OPERATOR_TOKEN, FakeClock, auth, registry_app, start_registry

UNREACHABLE = f"http://127.0.0.1:{free_port()}"


def node_config(tmp_path: Path, **overrides: Any) -> NodeConfig:
    fields: dict[str, Any] = {
        "name": "unit",
        "registry": RegistryEndpoints.parse(UNREACHABLE),
        "scenario": "rotate",
        "clusters": 2,
        "partition_index": 0,
        "partition_count": 8,
        "warmup_epochs": 1,
        "heartbeat_interval": 30.0,
        "status_interval": 100.0,
        "group_evaluation_interval": 1e6,
        "work_dir": tmp_path / "node",
    }
    return NodeConfig(**{**fields, **overrides})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    """The registry app in-process; its clock is ``api.app.state.settings.clock``."""
    with registry_app(tmp_path / "registry.db", clock=FakeClock()) as client:
        yield client


def agent_for(api: TestClient, cfg: NodeConfig, clock: FakeClock) -> NodeAgent:
    """A started agent (registered, warmed up, placed) against the in-process registry."""
    agent = start_agent(api, cfg, clock)
    assert agent is not None
    return agent


def start_agent(api: TestClient, cfg: NodeConfig, clock: FakeClock) -> NodeAgent | None:
    return NodeAgent.start(cfg, registry=RegistryClient("http://testserver", http=api), clock=clock)


def trainer_servers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "trainer-server"]


def last_seen(api: TestClient, node_id: int) -> float:
    return float(api.get(f"/nodes/{node_id}").json()["last_seen"])


def advance(agent_clock: FakeClock, api: TestClient, seconds: float) -> None:
    """Move the agent's and the registry's clocks together."""
    agent_clock.advance(seconds)
    api.app.state.settings.clock.advance(seconds)


def test_heartbeats_and_status_follow_their_own_timers(api: TestClient, tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    cfg = node_config(tmp_path)
    agent = agent_for(api, cfg, clock)
    try:
        assert agent.membership is None
        node_id = agent.credentials.node_id
        status = cfg.work_dir / STATUS_FILE

        agent.tick()  # t=0: heartbeat and status both due
        beat = last_seen(api, node_id)
        written = json.loads(status.read_text())
        assert written["node_id"] == node_id and written["group_id"] is None
        assert written["local_test_accuracy"] is not None
        status.unlink()

        for _ in range(2):  # t=10, t=20: nothing due
            advance(clock, api, 10)
            agent.tick()
        assert last_seen(api, node_id) == beat
        advance(clock, api, 10)  # t=30: a heartbeat, but no status write
        agent.tick()
        assert last_seen(api, node_id) == beat + 30
        assert not status.exists(), "status.json was written on the heartbeat path"
        advance(clock, api, 70)  # t=100: the status timer
        agent.tick()
        assert status.exists()
        # unplaced: it reports its local model's accuracy
        reported = api.get(f"/nodes/{node_id}").json()["accuracy"]
        assert reported == pytest.approx(agent.trainer.local_score())
    finally:
        agent.shutdown()


def test_a_group_that_failed_to_start_is_retried_on_the_clock(
    api: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(0.0)
    caplog.set_level(logging.WARNING, logger="mycelium.node")

    def attempts() -> int:
        return sum("could not found a group" in r.getMessage() for r in caplog.records)

    agent = agent_for(api, node_config(tmp_path), clock)  # the placement tries to found one
    try:
        assert attempts() == 1 and agent.hosted is None
        advance(clock, api, REHOME_RETRY_S / 2)
        agent.tick()
        assert attempts() == 1, "retried before the re-home interval"
        advance(clock, api, REHOME_RETRY_S)
        agent.tick()
        assert attempts() == 2
        assert not agent.stop_event.is_set()  # an outage can heal: the agent goes on
    finally:
        agent.shutdown()


def test_shutdown_deregisters_once_and_closes_the_client(api: TestClient, tmp_path: Path) -> None:
    agent = agent_for(api, node_config(tmp_path), FakeClock())
    node_id = agent.credentials.node_id
    agent.shutdown()
    assert api.get(f"/nodes/{node_id}").status_code == 404
    agent.shutdown()  # idempotent: never touches the closed client again
    assert api.get("/nodes").json() == []


def test_an_unusable_data_file_is_fatal_before_registering(api: TestClient, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(FatalNodeError, match="unusable data"):
        start_agent(api, node_config(tmp_path, data_path=bad), FakeClock())
    assert api.get("/nodes").json() == []
    assert trainer_servers() == []


def test_a_refused_registration_is_fatal(api: TestClient, tmp_path: Path) -> None:
    with pytest.raises(FatalNodeError, match="registration refused"):
        start_agent(api, node_config(tmp_path, name="n" * 101), FakeClock())
    assert api.get("/nodes").json() == []
    assert trainer_servers() == [], "the trainer endpoint outlived the failed start"


def test_stopping_while_the_registry_is_down_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with start_registry(tmp_path) as (url, registry):
        agent = NodeAgent.start(
            node_config(tmp_path), registry=RegistryClient(url), clock=FakeClock()
        )
        assert agent is not None
        registry.stop()
        caplog.clear()
        caplog.set_level(logging.INFO)
        agent.shutdown()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "marks node" in lines[0].getMessage()
    assert agent.credentials.token not in caplog.text


def test_status_reports_the_last_received_group_model(api: TestClient, tmp_path: Path) -> None:
    agent = agent_for(api, node_config(tmp_path), FakeClock())
    try:
        trainer = agent.trainer
        group_model = trainer.local_arrays()
        trainer.fit(group_model, {"local-epochs": 1}, round=3)
        first = agent.status.write(name="unit", node_id=1, group_id=7, moves=0, hosting_group_id=7)
        expected = trainer.test_accuracy(group_model)
        assert first.group_test_accuracy == pytest.approx(expected)
        assert first.round == 3
        # A different model arrives with the next round: the status follows it.
        shifted = [np.zeros_like(a) for a in group_model]
        trainer.fit(shifted, {"local-epochs": 1}, round=4)
        second = agent.status.write(name="unit", node_id=1, group_id=7, moves=0, hosting_group_id=7)
        assert second.group_test_accuracy == pytest.approx(trainer.test_accuracy(shifted))
        assert second.group_test_accuracy != first.group_test_accuracy
        assert second.personal_test_accuracy is None  # the agent passes none: not in a group
        # The agent's own thread personalises each new group model, off the loop.
        personal = wait_for(lambda: _personal_of(trainer, trainer.last_fit_at))
        assert personal.round == 4 and personal.method == "ens"  # the default
        third = agent.status.write(
            name="unit", node_id=1, group_id=7, moves=0, hosting_group_id=7, personal=personal
        )
        written = json.loads((agent.config.work_dir / STATUS_FILE).read_text())
        assert written["personal_test_accuracy"] == third.personal_test_accuracy
        assert written["predicts_with"] == personal.predicts_with in ENSEMBLES
        assert (third.personal_val_accuracy, third.uses_personal) == (
            personal.val_accuracy,
            personal.uses_personal,
        )
        assert third.group_test_accuracy == pytest.approx(personal.group_test_accuracy)
    finally:
        agent.shutdown()
    assert not [t for t in threading.enumerate() if t.name == "personalise"]


def test_a_members_heartbeat_reports_its_personal_accuracy_beside_the_groups(
    api: TestClient, tmp_path: Path
) -> None:
    """In a group, the heartbeat's accuracy stays the node's score of the group model (what
    the group's verified accuracy counts) and personal_accuracy is the test accuracy of what
    it predicts with, once a round of this group reached it. (The membership's SuperNode is
    never started: the test calls the heartbeat itself, not the loop.)"""
    agent = agent_for(api, node_config(tmp_path), FakeClock())
    try:
        body = {"name": "g", "fleet_address": f"127.0.0.1:{free_port()}"}
        gid = api.post("/groups", json=body, headers=auth(OPERATOR_TOKEN)).json()["group_id"]
        node_id, trainer = agent.credentials.node_id, agent.trainer
        agent.registry.join_group(gid, node_id)
        supernode = SuperNode(
            superlink_address=body["fleet_address"],
            node_config=SuperNodeConfig(),
            work_dir=tmp_path / "supernode",
            name="unit",
        )
        agent.actions.membership = Membership(gid, body["fleet_address"], supernode)
        agent._heartbeat()
        record = api.get(f"/nodes/{node_id}").json()
        assert record["personal_accuracy"] is None  # no round of this group yet
        trainer.fit(trainer.local_arrays(), {"local-epochs": 1}, round=1)
        personal = wait_for(lambda: _personal_of(trainer, trainer.last_fit_at))
        agent._heartbeat()
        record = api.get(f"/nodes/{node_id}").json()
        assert record["personal_accuracy"] == pytest.approx(personal.test_accuracy)
        assert record["accuracy"] == pytest.approx(trainer.group_score)
        verified = api.get(f"/groups/{gid}").json()["verified_accuracy"]
        assert verified == pytest.approx(trainer.group_score)
    finally:
        agent.shutdown()


def _personal_of(trainer: Any, fitted_at: float | None) -> Any:
    scores = trainer.personal
    return scores if scores is not None and scores.fitted_at == fitted_at else None


def wait_for(get: Any, deadline_s: float = 30.0) -> Any:
    """Poll ``get`` until it returns something (a deadline, not a sleep for readiness)."""
    end = time.monotonic() + deadline_s
    while (found := get()) is None:
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)
    return found
