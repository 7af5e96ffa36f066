"""Admission in the registry (docs/security.md): a member's SuperNode key, changeable only
with that node's token, listed to its group's host (group token), and the host's receipt
that the member reads before it starts its SuperNode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mycelium import node_keys
from tests.conftest import OPERATOR_TOKEN, auth, registry_app

BODY = {"name": "g", "fleet_address": "127.0.0.1:9092"}


@pytest.fixture
def api(database: Path | str) -> Iterator[TestClient]:
    with registry_app(database) as client:
        yield client


@pytest.fixture
def keys(tmp_path: Path) -> list[str]:
    return [node_keys.generate(tmp_path / f"k{i}").public_key for i in range(3)]


def node(api: TestClient, name: str = "n") -> dict[str, Any]:
    return api.post("/nodes", json={"name": name, "num_samples": 1}).json()


def group(api: TestClient) -> dict[str, Any]:
    return api.post("/groups", json=BODY, headers=auth(OPERATOR_TOKEN)).json()


def join(api: TestClient, g: dict[str, Any], n: dict[str, Any], key: str | None) -> Any:
    body = {"node_id": n["node_id"], **({"public_key": key} if key else {})}
    return api.post(f"/groups/{g['group_id']}/join", json=body, headers=auth(n["token"]))


def members(api: TestClient, g: dict[str, Any]) -> Any:
    return api.get(f"/groups/{g['group_id']}/members", headers=auth(g["group_token"]))


def admit(api: TestClient, g: dict[str, Any], n: dict[str, Any], key: str, fid: int) -> Any:
    return api.put(
        f"/groups/{g['group_id']}/members/{n['node_id']}/admission",
        json={"public_key": key, "flower_node_id": fid},
        headers=auth(g["group_token"]),
    )


def receipt(api: TestClient, n: dict[str, Any]) -> Any:
    return api.get(f"/nodes/{n['node_id']}/admission", headers=auth(n["token"])).json()


def test_the_host_sees_members_keys_and_its_receipt_reaches_the_member(
    api: TestClient, keys: list[str]
) -> None:
    g, n = group(api), node(api)
    assert join(api, g, n, keys[0] + " a comment").status_code == 200
    listed = members(api, g).json()
    assert listed == [{"node_id": n["node_id"], "public_key": keys[0], "alive": True}]
    assert receipt(api, n) == {
        "node_id": n["node_id"],
        "group_id": g["group_id"],
        "public_key": keys[0],
        "admitted": False,
        "flower_node_id": None,
    }
    assert admit(api, g, n, keys[0], 2**64 - 1).status_code == 204
    got = receipt(api, n)
    assert got["admitted"] and got["flower_node_id"] == 2**64 - 1
    assert api.get(f"/nodes/{n['node_id']}").json()["flower_node_id"] == 2**64 - 1


def test_a_key_changes_only_with_that_nodes_token(api: TestClient, keys: list[str]) -> None:
    g, n, other = group(api), node(api, "n"), node(api, "other")
    join(api, g, n, keys[0])
    path = f"/nodes/{n['node_id']}/public-key"
    for token in (other["token"], g["group_token"], OPERATOR_TOKEN):
        r = api.put(path, json={"public_key": keys[1]}, headers=auth(token))
        assert r.status_code == 403 and "not valid for node" in r.json()["detail"]
    assert api.put(path, json={"public_key": keys[1]}).status_code == 401
    assert members(api, g).json()[0]["public_key"] == keys[0]
    assert api.put(path, json={"public_key": keys[1]}, headers=auth(n["token"])).status_code == 204
    assert members(api, g).json()[0]["public_key"] == keys[1]
    # ... and another node's token cannot migrate it in with its own key either
    r = api.post(
        f"/nodes/{n['node_id']}/migrate",
        json={"to_group_id": group(api)["group_id"], "expected_gain": 0.1, "public_key": keys[2]},
        headers=auth(other["token"]),
    )
    assert r.status_code == 403


def test_a_new_key_voids_the_receipt_and_an_old_key_cannot_be_admitted(
    api: TestClient, keys: list[str]
) -> None:
    g, n = group(api), node(api)
    join(api, g, n, keys[0])
    admit(api, g, n, keys[0], 7)
    api.put(f"/nodes/{n['node_id']}/public-key", json={"public_key": keys[1]},
            headers=auth(n["token"]))  # fmt: skip
    assert receipt(api, n)["admitted"] is False
    r = admit(api, g, n, keys[0], 8)
    assert r.status_code == 409 and "another key" in r.json()["detail"]["message"]
    assert admit(api, g, n, keys[1], 9).status_code == 204 and receipt(api, n)["admitted"]


def test_leaving_migrating_and_closing_drop_the_membership_key(
    api: TestClient, keys: list[str]
) -> None:
    g1, g2, n = group(api), group(api), node(api)
    join(api, g1, n, keys[0])
    admit(api, g1, n, keys[0], 5)
    r = api.post(
        f"/nodes/{n['node_id']}/migrate",
        json={"to_group_id": g2["group_id"], "expected_gain": 0.1, "public_key": keys[1]},
        headers=auth(n["token"]),
    )
    assert r.status_code == 200
    assert members(api, g1).json() == []  # g1's host unregisters it at its next sync
    assert members(api, g2).json()[0]["public_key"] == keys[1]
    assert receipt(api, n)["admitted"] is False  # g1's receipt does not count in g2
    r = admit(api, g1, n, keys[1], 6)
    assert r.status_code == 409 and "not a member" in r.json()["detail"]["message"]
    api.post(f"/groups/{g2['group_id']}/leave", json={"node_id": n["node_id"]},
             headers=auth(n["token"]))  # fmt: skip
    assert receipt(api, n)["public_key"] is None and members(api, g2).json() == []
    join(api, g2, n, keys[2])
    api.delete(f"/groups/{g2['group_id']}", headers=auth(g2["group_token"]))
    assert receipt(api, n) == {**receipt(api, n), "group_id": None, "public_key": None}


def test_the_member_list_needs_the_groups_token(api: TestClient, keys: list[str]) -> None:
    g, n = group(api), node(api)
    join(api, g, n, keys[0])
    path = f"/groups/{g['group_id']}/members"
    assert api.get(path).status_code == 401
    for token in (n["token"], group(api)["group_token"]):
        assert api.get(path, headers=auth(token)).status_code == 403
    r = api.put(
        f"/groups/{g['group_id']}/members/{n['node_id']}/admission",
        json={"public_key": keys[0], "flower_node_id": 1},
        headers=auth(n["token"]),
    )
    assert r.status_code == 403
    assert (
        api.get(f"/nodes/{n['node_id']}/admission", headers=auth(g["group_token"])).status_code
        == 403
    )


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHl0aGlzIGlzIG5vdCBhIHJlYWwga2V5IGF0IGFsbCE=",
        "x" * 2000,
    ],
)
def test_a_bad_key_is_a_422_with_a_message_that_does_not_echo_it(api: TestClient, bad: str) -> None:
    g, n = group(api), node(api)
    r = join(api, g, n, bad)
    assert r.status_code == 422, r.text
    assert bad not in r.text and r.json()["detail"][0]["msg"]
    assert api.get(f"/nodes/{n['node_id']}").json()["group_id"] is None


def test_no_key_in_the_public_views(api: TestClient, keys: list[str]) -> None:
    g, n = group(api), node(api)
    join(api, g, n, keys[0])
    blob = keys[0].split()[1]
    for path in ("/nodes", f"/nodes/{n['node_id']}", f"/groups/{g['group_id']}", "/groups"):
        assert blob not in api.get(path).text, path
