"""RegistryClient against the real app in-process (TestClient) and against no server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mycelium.api import HeartbeatOut, MembershipOut
from mycelium.client import (
    Conflict,
    Forbidden,
    NotFound,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
)
from mycelium.procs import free_port
from tests.conftest import create_group, register_node, registry_app

URL = "http://testserver"


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    with registry_app(tmp_path / "registry.db") as client:
        yield client


def test_full_node_and_group_cycle(http: TestClient) -> None:
    node = register_node(URL, name="a", num_samples=12, http=http)
    assert node.client.token == node.creds.token and node.client.health()
    group, coordinator = create_group(URL, max_capacity=2, http=http)
    joined = node.client.join_group(group.group_id, node.node_id, flower_node_id=2**63 + 5)
    assert joined == MembershipOut(group_id=group.group_id, node_id=node.node_id)
    beat = node.client.heartbeat(node.node_id, group_id=group.group_id, accuracy=0.6, loss=0.9)
    assert beat == HeartbeatOut(node_id=node.node_id, group_id=group.group_id, alive=True)
    assert node.client.get_node(node.node_id).flower_node_id == 2**63 + 5
    coordinator.group_heartbeat(group.group_id)
    coordinator.report_round(
        group.group_id, round=1, accuracy=0.8, loss=0.2, num_nodes=1, num_examples=12
    )
    assert coordinator.get_model(group.group_id) is None
    coordinator.put_model(group.group_id, b"model-bytes")
    assert node.client.get_model(group.group_id) == b"model-bytes"
    listed = node.client.list_groups(has_capacity=True)
    assert [g.group_id for g in listed] == [group.group_id] and listed[0].accuracy == 0.8
    assert node.client.list_groups(task="other") == []
    assert node.client.list_nodes(group_id=group.group_id, alive=True)[0].name == "a"
    assert node.client.get_group(group.group_id).rounds[0].num_examples == 12
    other, _ = create_group(URL, http=http)
    moved = node.client.migrate(
        node.node_id, to_group_id=other.group_id, reason="better", expected_gain=0.1
    )
    assert moved.from_group_id == group.group_id
    assert node.client.leave_group(other.group_id, node.node_id).group_id is None
    types = [e.type for e in node.client.events(since=0, limit=100)]
    assert types[-4:] == ["joined", "group_created", "migrated", "left"]
    node.client.delete_node(node.node_id)
    with pytest.raises(NotFound):
        node.client.get_node(node.node_id)


def test_errors_map_to_exceptions(http: TestClient) -> None:
    node = register_node(URL, http=http)
    group, _ = create_group(URL, http=http)
    node.client.join_group(group.group_id, node.node_id)
    with pytest.raises(Conflict) as conflict:
        node.client.heartbeat(node.node_id, group_id=None)
    assert conflict.value.status_code == 409
    assert conflict.value.actual_group_id == group.group_id
    assert "\n" not in str(conflict.value)
    with pytest.raises(NotFound):
        node.client.get_group(999)
    anonymous = RegistryClient(URL, http=http)
    with pytest.raises(Forbidden) as missing:
        anonymous.heartbeat(node.node_id, group_id=group.group_id)
    assert missing.value.status_code == 401
    with pytest.raises(RegistryError) as invalid:
        node.client.heartbeat(node.node_id, group_id=group.group_id, accuracy=2.0)
    assert invalid.value.status_code == 422 and "accuracy" in str(invalid.value)
    with pytest.raises(ValueError):  # NaN cannot even be sent as JSON
        node.client.heartbeat(node.node_id, group_id=group.group_id, accuracy=float("nan"))


def test_get_model_refuses_bytes_that_do_not_match_etag(http: TestClient) -> None:
    def lying(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"evil", headers={"ETag": '"' + "0" * 64 + '"'})

    client = RegistryClient(URL, http=httpx.Client(transport=httpx.MockTransport(lying)))
    with pytest.raises(RegistryError, match="does not match"):
        client.get_model(1)


def test_unreachable_registry_is_unavailable() -> None:
    client = RegistryClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert client.health() is False
    with pytest.raises(RegistryUnavailable, match="no registry answered"):
        client.list_groups()
    client.close()
