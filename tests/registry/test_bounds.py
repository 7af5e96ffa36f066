"""Every integer from a body, a query or a path is bounded by the one rule in mycelium/api.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mycelium.api import INT64_MAX, UINT64_MAX
from tests.conftest import registry_app

# Flower's node id is a uint64; the store keeps it as TEXT, so 2^64 - 1 is what it holds.
UINT64_FIELDS = {"flower_node_id"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # Shared by the module: every request here is refused before it reaches the store.
    with registry_app(tmp_path_factory.mktemp("bounds") / "registry.db") as client:
        yield client


def _integers(schema: dict[str, Any], components: dict[str, Any], name: str) -> Iterator[tuple]:
    """(name, schema) of every integer in ``schema``, through $ref, anyOf and properties."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    if schema.get("type") == "integer":
        yield name, schema
    for option in schema.get("anyOf", []):
        yield from _integers(option, components, name)
    for prop, sub in schema.get("properties", {}).items():
        yield from _integers(sub, components, prop)


def _inputs(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    components = openapi["components"]["schemas"]
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            for param in op.get("parameters", []):
                for name, schema in _integers(param["schema"], components, param["name"]):
                    yield where, name, schema
            for media in op.get("requestBody", {}).get("content", {}).values():
                for name, schema in _integers(media["schema"], components, "body"):
                    yield where, name, schema


def test_every_integer_input_is_bounded_to_what_sqlite_holds(api: TestClient) -> None:
    inputs = list(_inputs(api.get("/openapi.json").json()))
    assert len(inputs) >= 20  # path ids, queries and body fields of every route
    for where, name, schema in inputs:
        top = UINT64_MAX if name in UINT64_FIELDS else INT64_MAX
        assert "minimum" in schema and "maximum" in schema, (where, name, schema)
        assert schema["minimum"] >= 0 and schema["maximum"] <= top, (where, name, schema)
        if name.endswith("_id") and name not in UINT64_FIELDS:
            assert schema["minimum"] == 1, (where, name)
        if name == "limit":
            assert (schema["minimum"], schema["maximum"]) == (1, 1000), where


BIG = str(2**63)
HUGE = "183637106224554039562280632320"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/events?since={HUGE}"),
        ("GET", f"/events?since={BIG}"),
        ("GET", "/events?limit=1001"),
        ("GET", "/events?limit=0"),
        ("GET", "/nodes?group_id=200038683697220610793930752"),
        ("GET", "/nodes?group_id=0"),
        ("GET", f"/groups?offset={BIG}"),
        ("GET", "/groups?limit=1001"),
        ("GET", f"/nodes/{BIG}"),
        ("GET", "/nodes/0"),
        ("GET", f"/groups/{HUGE}"),
        ("GET", "/groups/-1"),
        ("GET", f"/groups/{BIG}/model"),
        ("DELETE", f"/nodes/{BIG}"),
        ("DELETE", f"/groups/{BIG}"),
        ("POST", f"/nodes/{BIG}/heartbeat"),
        ("POST", f"/nodes/{HUGE}/migrate"),
        ("POST", f"/groups/{BIG}/join"),
        ("POST", f"/groups/{BIG}/leave"),
        ("POST", f"/groups/{BIG}/heartbeat"),
        ("POST", f"/groups/{BIG}/rounds"),
        ("PUT", f"/groups/{BIG}/model"),
    ],
)
def test_out_of_range_query_and_path_integers_are_422(
    api: TestClient, method: str, path: str
) -> None:
    headers = {"Authorization": "Bearer whatever"}
    r = api.request(method, path, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] in ("query", "path")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/nodes", {"name": "a", "num_samples": 2**63}),
        ("/groups/1/join", {"node_id": 2**63}),
        ("/groups/1/join", {"node_id": 1, "flower_node_id": 2**64}),
        ("/groups/1/leave", {"node_id": 0}),
        ("/nodes/1/migrate", {"to_group_id": 2**63, "expected_gain": 0.1}),
        (
            "/groups/1/rounds",
            {"round": 2**63, "accuracy": 0.5, "loss": 1, "num_nodes": 1, "num_examples": 1},
        ),
        ("/groups", {"name": "g", "fleet_address": "h:1", "max_capacity": 2**63}),
    ],
)
def test_out_of_range_body_integers_are_422(
    api: TestClient, path: str, body: dict[str, Any]
) -> None:
    r = api.post(path, json=body, headers={"Authorization": "Bearer whatever"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "body"
