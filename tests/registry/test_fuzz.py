"""Property-based test of the whole API from its OpenAPI schema (schemathesis + hypothesis).

Every operation gets requests generated from the schema, valid ones (positive) and invalid
ones (negative), against the REAL registry process, with valid tokens: the operator's for
``POST /groups``, the node's or the group's that the path (or body) names otherwise, ids
aimed at nodes and groups that exist. No answer may be a 5xx, and every answer must conform
to the schema (documented status, content type, headers and body). A fixed seed and a
bounded number of examples per operation keep it repeatable and fast.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import registry
from mycelium import launch
from tests.conftest import OPERATOR_TOKEN, auth, operator_token_file
from tests.postgres import PgServer

EXAMPLES = 25  # per operation and mode: ~900 requests, about a minute on a quiet machine
WORLD = 3  # nodes and groups made before each operation is fuzzed
# Answers that never end by design (tested in tests/dashboard/test_stream.py).
ENDLESS = {"GET /events/stream"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _labels() -> list[str]:
    """``METHOD /path`` of every operation, read from the app's schema at collection."""
    with tempfile.TemporaryDirectory() as tmp:
        app = registry.create_app(registry.Settings(db_path=pathlib.Path(tmp) / "unused.db"))
        paths = app.openapi()["paths"]
    labels = [f"{method.upper()} {path}" for path, item in paths.items() for method in item]
    return [label for label in labels if label not in ENDLESS]


@dataclass
class World:
    """Nodes and groups to aim at: generated ids up to 1000 are mapped onto them."""

    url: str
    nodes: dict[int, str] = field(default_factory=dict)  # node_id -> node token
    groups: dict[int, str] = field(default_factory=dict)  # group_id -> group token

    def node(self, generated: Any) -> int | Any:
        return _onto(generated, sorted(self.nodes))

    def group(self, generated: Any) -> int | Any:
        return _onto(generated, sorted(self.groups))


def _onto(generated: Any, ids: list[int]) -> Any:
    if isinstance(generated, int) and 1 <= generated <= 1000 and ids:
        return ids[(generated - 1) % len(ids)]
    return generated  # large ids stay: they must be a clean 404 or 422


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any]]:
    """A real registry process for the module, once per store."""
    tmp = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        with _registry(tmp, tmp / "registry.db") as live:
            yield live
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database("fuzz")
    try:
        with _registry(tmp, url) as live:
            yield live
    finally:
        server.drop_database(url)


@contextmanager
def _registry(tmp: pathlib.Path, db: pathlib.Path | str) -> Iterator[tuple[str, Any]]:
    with launch.registry_process(
        db=db,
        log_path=tmp / "registry.log",
        operator_token_file=operator_token_file(tmp),
        max_groups_per_node=2,
    ) as reg:
        yield reg.url, schemathesis.openapi.from_url(f"{reg.url}/openapi.json")


@pytest.fixture
def world(live: tuple[str, Any]) -> World:
    url = live[0]
    made = World(url)
    with httpx.Client(base_url=url, timeout=10) as http:
        for i in range(WORLD):
            node = http.post("/nodes", json={"name": f"w{i}", "num_samples": 1}).json()
            body = {"name": f"w{i}", "fleet_address": "127.0.0.1:9092", "max_capacity": 2}
            group = http.post("/groups", json=body, headers=auth(OPERATOR_TOKEN)).json()
            joined = http.post(
                f"/groups/{group['group_id']}/join",
                json={"node_id": node["node_id"]},
                headers=auth(node["token"]),
            )
            assert joined.status_code == 200, joined.text
            made.nodes[node["node_id"]] = node["token"]
            made.groups[group["group_id"]] = group["group_token"]
    return made


def _aim(case: Any, world: World) -> dict[str, str]:
    """Point the case at the world's nodes and groups; the headers with the right token."""
    params = case.path_parameters or {}
    if "node_id" in params:
        params["node_id"] = world.node(params["node_id"])
    if "group_id" in params:
        params["group_id"] = world.group(params["group_id"])
    body = case.body if isinstance(case.body, dict) else {}
    for key in ("node_id", "to_group_id", "group_id"):
        if key in body:
            body[key] = world.node(body[key]) if key == "node_id" else world.group(body[key])
    path, method = case.operation.path, case.operation.method.upper()
    if path == "/groups" and method == "POST":
        return auth(OPERATOR_TOKEN)
    if path.startswith("/nodes/{node_id}"):
        return auth(world.nodes.get(params["node_id"], next(iter(world.nodes.values()))))
    if path.endswith(("/join", "/leave")):
        node_id = body.get("node_id")  # a negative case may make it a list (unhashable)
        known = world.nodes.get(node_id) if isinstance(node_id, int) else None
        return auth(known or next(iter(world.nodes.values())))
    if path.startswith("/groups/{group_id}") and method != "GET":
        return auth(world.groups.get(params["group_id"], next(iter(world.groups.values()))))
    return {}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", _labels())
def test_every_operation_answers_within_its_schema(
    label: str, mode: GenerationMode, live: tuple[str, Any], world: World
) -> None:
    url, schema = live
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    if mode is GenerationMode.NEGATIVE and not (
        list(operation.iter_parameters()) or operation.body
    ):
        pytest.skip(f"{label} takes no input to make invalid")
    session = requests.Session()

    @seed(20261201)
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        headers = _aim(case, world)
        case.call_and_validate(base_url=url, session=session, headers=headers, checks=CHECKS)

    try:
        fuzz()
    finally:
        session.close()


def test_the_fuzzed_operations_are_all_of_them() -> None:
    labels = _labels()
    assert len(labels) == 24 and "POST /nodes/{node_id}/heartbeat" in labels
    assert "GET /dashboard/snapshot" in labels  # how the dashboard opens (docs/dashboard.md)
    assert "GET /groups/{group_id}/members" in labels  # admission (docs/security.md)
    assert "GET /metrics" in labels
