"""The registry side of a group's admission (``RegistryMembers``) with the real registry
app in-process and an in-memory SuperLink with Flower's rules: members' keys are
registered and get receipts their nodes can read; leavers and deleted nodes are
unregistered at the next sync; a registry outage changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mycelium import node_keys
from mycelium.client import RegistryClient
from mycelium.security.admission import Admission
from mycelium.security.gate import RegistryMembers
from tests.conftest import OPERATOR_TOKEN, registry_app
from tests.security.test_admission import MemorySuperLink

URL = "http://testserver"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with registry_app(tmp_path / "registry.db") as client:
        yield client


def test_members_are_admitted_with_receipts_and_leavers_cut_off(
    api: TestClient, tmp_path: Path
) -> None:
    host = RegistryClient(URL, http=api, token=OPERATOR_TOKEN)
    group = host.create_group(name="g", fleet_address="127.0.0.1:9092")
    other = host.create_group(name="o", fleet_address="127.0.0.1:9093")
    host.token = group.group_token
    nodes = [RegistryClient(URL, http=api) for _ in range(3)]
    creds = [n.register_node(name=f"n{i}", num_samples=1) for i, n in enumerate(nodes)]
    keys = [node_keys.generate(tmp_path / f"k{i}").public_key for i in range(3)]
    for node, cred, key in zip(nodes, creds, keys, strict=True):
        node.join_group(group.group_id, cred.node_id, public_key=key)

    link, registry = MemorySuperLink(), RegistryMembers(host, group.group_id)
    admission = Admission(link, registry.members, on_change=registry.publish)
    registry.admission = admission
    admission.sync()
    assert sorted(link.active.values()) == sorted(keys)
    for node, cred in zip(nodes, creds, strict=True):
        receipt = node.admission(cred.node_id)
        assert receipt.admitted and receipt.flower_node_id in link.active

    nodes[0].migrate(creds[0].node_id, to_group_id=other.group_id, reason="t", expected_gain=0.1)
    nodes[1].delete_node(creds[1].node_id)
    admission.sync()
    assert list(link.active.values()) == [keys[2]]

    host.token = "not-the-group-token"  # the member list is unreadable: nothing changes
    assert registry.members() is None and not admission.sync()
    assert list(link.active.values()) == [keys[2]]
