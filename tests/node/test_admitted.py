"""A node's side of admission (mycelium.node.admitted): a fresh key per membership, and the
wait for its host's receipt, against the registry app in-process."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mycelium.client import RegistryClient
from mycelium.node.admitted import AppPin, MembershipKeys, wait_admitted
from mycelium.security.app_pin import RefusedRun
from tests.conftest import OPERATOR_TOKEN, registry_app


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with registry_app(tmp_path / "registry.db") as client:
        yield client


def test_every_membership_gets_its_own_private_key(tmp_path: Path) -> None:
    keys = MembershipKeys(tmp_path / "keys")
    first, second = keys.fresh(1), keys.fresh(1)
    assert first.public_key != second.public_key
    assert first.private_key_path != second.private_key_path
    assert stat.S_IMODE(first.private_key_path.stat().st_mode) == 0o600


def test_wait_admitted_returns_the_receipt_for_this_key_only(
    api: TestClient, tmp_path: Path
) -> None:
    host = RegistryClient("http://testserver", http=api, token=OPERATOR_TOKEN)
    group = host.create_group(name="g", fleet_address="127.0.0.1:9092")
    host.token = group.group_token
    node = RegistryClient("http://testserver", http=api)
    creds = node.register_node(name="n", num_samples=1)
    keys = MembershipKeys(tmp_path)
    old, new = keys.fresh(group.group_id), keys.fresh(group.group_id)
    node.join_group(group.group_id, creds.node_id, public_key=old.public_key)
    host.admit(group.group_id, creds.node_id, public_key=old.public_key, flower_node_id=41)
    node.set_public_key(creds.node_id, new.public_key)

    def wait(key: str) -> int | None:
        return wait_admitted(
            node, creds.node_id, group_id=group.group_id, public_key=key, timeout=0.3
        )

    assert wait(new.public_key) is None  # the old key's receipt does not count
    host.admit(group.group_id, creds.node_id, public_key=new.public_key, flower_node_id=42)
    assert wait(new.public_key) == 42
    assert wait(old.public_key) is None


def test_refused_runs_are_taken_once() -> None:
    pin = AppPin(Path("unused"))
    run = RefusedRun(run_id=7, fab_id="x", fab_hash="a" * 64, expected_hash="b" * 64)
    pin._record(run)
    assert pin.take_refused() == [run] and pin.take_refused() == []
    assert "run 7 ships app x" in run.reason
