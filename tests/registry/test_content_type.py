"""One content-type rule for every JSON route, the hand-parsed heartbeat included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mycelium.registry.middleware import is_json
from tests.conftest import auth, registry_app


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with registry_app(tmp_path / "registry.db") as client:
        yield client


def _world(api: TestClient) -> dict[str, Any]:
    """A node (token), a group it created (token) that it is a member of."""
    node = api.post("/nodes", json={"name": "n", "num_samples": 1}).json()
    group = api.post(
        "/groups", json={"name": "g", "fleet_address": "h:1"}, headers=auth(node["token"])
    ).json()
    joined = api.post(
        f"/groups/{group['group_id']}/join",
        json={"node_id": node["node_id"]},
        headers=auth(node["token"]),
    )
    assert joined.status_code == 200, joined.text
    other = api.post(
        "/groups", json={"name": "o", "fleet_address": "h:2"}, headers=auth(node["token"])
    )
    return {
        "n": node["node_id"],
        "nt": node["token"],
        "g": group["group_id"],
        "gt": group["group_token"],
        "o": other.json()["group_id"],
        "k": KEY,
    }


KEY = (  # a P-384 public key (mycelium.node_keys.generate)
    "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBBJK08VPAKtE5OZT"
    "2ciDQapLrqPnMi53vIDhvZYKLdF9G3z/OuTBUYbgnTPWjw6eGtqFAytfk6JmY/N9kwQE2g1L5eErcDEUq4cwW7nt"
    "qiSMevPgwxiNQRoUZ/nRvBr1Ww=="
)


# (method, path template, body, whose token, status with the right content type)
ROUTES = [
    ("POST", "/nodes", {"name": "b", "num_samples": 1}, None, 201),
    ("POST", "/nodes/{n}/heartbeat", {"group_id": "{g}"}, "nt", 200),
    ("POST", "/nodes/{n}/migrate", {"to_group_id": "{o}", "expected_gain": 0.1}, "nt", 200),
    ("DELETE", "/nodes/{n}", {}, "nt", 204),
    ("POST", "/groups", {"name": "x", "fleet_address": "h:3"}, "nt", 201),
    ("POST", "/groups/{o}/join", {"node_id": "{n}"}, "nt", 409),
    ("POST", "/groups/{g}/leave", {"node_id": "{n}"}, "nt", 200),
    ("POST", "/groups/{g}/heartbeat", {}, "gt", 200),
    (
        "POST",
        "/groups/{g}/rounds",
        {"round": 1, "accuracy": 0.5, "loss": 1.0, "num_nodes": 1, "num_examples": 1},
        "gt",
        201,
    ),
    ("DELETE", "/groups/{g}", {}, "gt", 204),
    ("PUT", "/nodes/{n}/public-key", {"public_key": "{k}"}, "nt", 204),
    # the member has no key yet: the receipt is refused (409), after the body was read
    (
        "PUT",
        "/groups/{g}/members/{n}/admission",
        {"public_key": "{k}", "flower_node_id": 1},
        "gt",
        409,
    ),
]


def _fill(value: Any, world: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return world[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


def _send(api: TestClient, route: tuple, world: dict[str, Any], content_type: str | None) -> Any:
    method, template, body, whose, _ = route
    headers = auth(world[whose]) if whose else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    raw = json.dumps(_fill(body, world)).encode()
    return api.request(method, template.format(**world), content=raw, headers=headers)


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_a_json_route_refuses_a_body_that_is_not_declared_json(
    api: TestClient, route: tuple
) -> None:
    world = _world(api)
    for content_type in ("application/xml", "text/plain", None):
        r = _send(api, route, world, content_type)
        assert r.status_code == 422, (content_type, r.text)
        assert r.json()["detail"][0]["loc"] == ["header", "content-type"]
    r = _send(api, route, world, "application/json; charset=utf-8")
    assert r.status_code == route[4], r.text


def test_the_routes_above_are_every_route_that_takes_a_json_body(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    operations = {
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method in ("post", "put", "patch", "delete") and not path.endswith("/model")
    }
    tested = {
        (m, p.replace("{n}", "{node_id}").replace("{g}", "{group_id}")) for m, p, *_ in ROUTES
    }
    tested = {(m, p.replace("{o}", "{group_id}")) for m, p in tested}
    assert operations == tested


def test_the_model_upload_takes_raw_bytes_of_any_type(api: TestClient) -> None:
    world = _world(api)
    data = b"not json"
    headers = {
        **auth(world["gt"]),
        "Content-Type": "application/octet-stream",
        "X-Model-SHA256": "ad1ee8c5e3ed3ae7ff1b4a0e6f8ac9b2d8c07d1a7a3e3ca6e3b3f2c43d0b69a0",
    }
    r = api.put(f"/groups/{world['g']}/model", content=data, headers=headers)
    assert r.status_code == 400 and "does not match" in r.json()["detail"]  # past the type rule


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("application/xml", False),
        ("text/json", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
    ],
)
def test_is_json(value: str | None, expected: bool) -> None:
    assert is_json(value) is expected
