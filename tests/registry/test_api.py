"""Registry API unit tests: in-process app, fresh file database per test, injected clock."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import OPERATOR_TOKEN, FakeClock, auth, registry_app, sweep

NODE_TTL = 90.0
GROUP_TTL = 120.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(database: Path | str, clock: FakeClock) -> Iterator[TestClient]:
    with registry_app(
        database,
        node_ttl=NODE_TTL,
        group_ttl=GROUP_TTL,
        clock=clock,
        max_model_mb=0.01,
    ) as client:
        yield client


def new_node(api: TestClient, name: str = "n", num_samples: int = 10) -> tuple[int, str]:
    r = api.post("/nodes", json={"name": name, "num_samples": num_samples})
    assert r.status_code == 201, r.text
    return r.json()["node_id"], r.json()["token"]


def new_group(api: TestClient, **fields: Any) -> dict[str, Any]:
    """Create a group as the operator."""
    body = {"name": "g", "fleet_address": "127.0.0.1:9092", **fields}
    r = api.post("/groups", json=body, headers=auth(OPERATOR_TOKEN))
    assert r.status_code == 201, r.text
    return r.json()


def join(api: TestClient, group_id: int, node_id: int, token: str, **extra: Any) -> Any:
    return api.post(
        f"/groups/{group_id}/join", json={"node_id": node_id, **extra}, headers=auth(token)
    )


def beat(api: TestClient, node_id: int, token: str, **body: Any) -> Any:
    body.setdefault("group_id", None)
    return api.post(f"/nodes/{node_id}/heartbeat", json=body, headers=auth(token))


def event_types(api: TestClient) -> list[str]:
    return [e["type"] for e in api.get("/events", params={"limit": 1000}).json()["events"]]


# -- basics, nodes ---------------------------------------------------------------------------


def test_health_docs_and_schema(api: TestClient) -> None:
    assert api.get("/health").json() == {"status": "ok", "self_preservation": False}
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert "/nodes/{node_id}/heartbeat" in paths and "/groups/{group_id}/model" in paths


def test_register_and_read_node(api: TestClient, clock: FakeClock) -> None:
    r = api.post("/nodes", json={"name": "a", "num_samples": 5, "address": "10.0.0.1"})
    assert r.status_code == 201
    node = api.get(f"/nodes/{r.json()['node_id']}").json()
    assert node["name"] == "a" and node["task"] == "digits" and node["address"] == "10.0.0.1"
    assert node["group_id"] is None and node["alive"] is True
    assert node["last_seen"] == clock.now == node["created_at"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "num_samples": 1},
        {"name": "x" * 101, "num_samples": 1},
        {"name": "a", "num_samples": -1},
        {"name": "a", "num_samples": 2**63},
        {"name": "a", "num_samples": 1, "address": "x" * 201},
        {"name": "a", "num_samples": 1, "unknown": 1},
        {"num_samples": 1},
        {"name": "a\u0000b", "num_samples": 1},  # PostgreSQL's TEXT holds no NUL
    ],
)
def test_register_node_refuses_bad_input(api: TestClient, body: dict[str, Any]) -> None:
    r = api.post("/nodes", json=body)
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"]


def test_an_unpaired_surrogate_in_text_is_422(api: TestClient) -> None:
    """JSON may escape half a surrogate pair; no store could encode it: refused as JSON."""
    body = b'{"name": "a", "num_samples": 1, "address": "\\ud800:1"}'
    r = api.post("/nodes", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "unicode" in r.json()["detail"][0]["msg"]


def test_unknown_node_is_404(api: TestClient) -> None:
    assert api.get("/nodes/99").status_code == 404
    assert "node 99" in api.get("/nodes/99").json()["detail"]


def test_list_nodes_filters_by_group_and_liveness(api: TestClient, clock: FakeClock) -> None:
    a, ta = new_node(api, "a")
    b, _ = new_node(api, "b")
    g = new_group(api)["group_id"]
    assert join(api, g, a, ta).status_code == 200
    assert [n["node_id"] for n in api.get("/nodes", params={"group_id": g}).json()] == [a]
    clock.advance(NODE_TTL + 1)
    assert beat(api, a, ta, group_id=g).status_code == 200
    alive = api.get("/nodes", params={"alive": "true"}).json()
    dead = api.get("/nodes", params={"alive": "false"}).json()
    assert [n["node_id"] for n in alive] == [a]
    assert [n["node_id"] for n in dead] == [b] and dead[0]["alive"] is False


def test_delete_node_frees_slot_and_kills_token(api: TestClient) -> None:
    g = new_group(api, max_capacity=1)["group_id"]
    a, ta = new_node(api, "a")
    b, tb = new_node(api, "b")
    assert join(api, g, a, ta).status_code == 200
    assert join(api, g, b, tb).status_code == 409
    assert api.delete(f"/nodes/{a}").status_code == 401
    assert api.delete(f"/nodes/{a}", headers=auth(tb)).status_code == 403
    assert api.delete(f"/nodes/{a}", headers=auth(ta)).status_code == 204
    assert beat(api, a, ta).status_code == 404
    assert api.delete(f"/nodes/{a}", headers=auth(ta)).status_code == 404
    assert api.get(f"/nodes/{a}").status_code == 404
    assert join(api, g, b, tb).status_code == 200
    assert "node_deleted" in event_types(api)


# -- heartbeats ------------------------------------------------------------------------------


def test_heartbeat_records_metrics(api: TestClient, clock: FakeClock) -> None:
    a, ta = new_node(api)
    g = new_group(api)["group_id"]
    join(api, g, a, ta)
    clock.advance(5)
    fid = 2**64 - 1
    r = beat(
        api, a, ta, group_id=g, accuracy=0.8, loss=0.4, num_samples=7, round=3, flower_node_id=fid
    )
    assert r.status_code == 200
    assert r.json() == {"node_id": a, "group_id": g, "alive": True}
    node = api.get(f"/nodes/{a}").json()
    assert (node["accuracy"], node["loss"], node["num_samples"], node["round"]) == (0.8, 0.4, 7, 3)
    assert node["flower_node_id"] == fid and node["last_seen"] == clock.now


def test_heartbeat_personal_accuracy_is_the_nodes_not_the_groups(api: TestClient) -> None:
    """Optional; shown in the node's record as its last beat said (a beat without it clears
    it); the group's verified accuracy stays its members' score of the group model."""
    a, ta = new_node(api)
    g = new_group(api)["group_id"]
    join(api, g, a, ta)
    assert api.get(f"/nodes/{a}").json()["personal_accuracy"] is None
    assert beat(api, a, ta, group_id=g, accuracy=0.6, personal_accuracy=0.9).status_code == 200
    assert api.get(f"/nodes/{a}").json()["personal_accuracy"] == 0.9
    assert [n["personal_accuracy"] for n in api.get("/nodes").json()] == [0.9]
    assert api.get(f"/groups/{g}").json()["verified_accuracy"] == 0.6
    assert beat(api, a, ta, group_id=g, accuracy=0.7).status_code == 200
    node = api.get(f"/nodes/{a}").json()
    assert (node["accuracy"], node["personal_accuracy"]) == (0.7, None)
    r = beat(api, a, ta, group_id=g, personal_accuracy=1.5)
    assert r.status_code == 422 and "personal_accuracy" in r.text


def test_heartbeat_auth_and_unknown_node(api: TestClient) -> None:
    a, ta = new_node(api, "a")
    _, tb = new_node(api, "b")
    assert api.post(f"/nodes/{a}/heartbeat", json={"group_id": None}).status_code == 401
    bad_scheme = {"Authorization": f"Basic {ta}"}
    assert (
        api.post(f"/nodes/{a}/heartbeat", json={"group_id": None}, headers=bad_scheme).status_code
        == 401
    )
    assert beat(api, a, tb).status_code == 403
    assert beat(api, a, "not-a-token").status_code == 403
    assert beat(api, 999, ta).status_code == 404


def test_heartbeat_wrong_group_is_409_with_actual_group(api: TestClient) -> None:
    a, ta = new_node(api)
    g = new_group(api)["group_id"]
    r = beat(api, a, ta, group_id=g)
    assert r.status_code == 409 and r.json()["detail"]["group_id"] is None
    join(api, g, a, ta)
    r = beat(api, a, ta, group_id=None)
    assert r.status_code == 409
    assert r.json()["detail"]["group_id"] == g and "message" in r.json()["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"group_id": null, "accuracy": NaN}',
        b'{"group_id": null, "loss": Infinity}',
        b'{"group_id": null, "accuracy": -Infinity}',
        b'{"group_id": null, "accuracy": 1.5}',
        b'{"group_id": null, "loss": -0.1}',
        b'{"group_id": null, "num_samples": -1}',
        b'{"group_id": null, "round": -1}',
        b'{"group_id": null, "flower_node_id": 18446744073709551616}',
        b'{"group_id": null, "num_samples": 9223372036854775808}',
        b'{"group_id": "x"}',
        b'{"accuracy": 0.5',
        b"[]",
    ],
)
def test_heartbeat_refuses_bad_metrics(api: TestClient, raw: bytes) -> None:
    a, ta = new_node(api)
    headers = {**auth(ta), "Content-Type": "application/json"}
    r = api.post(f"/nodes/{a}/heartbeat", content=raw, headers=headers)
    assert r.status_code == 422, r.text
    assert api.get(f"/nodes/{a}").json()["accuracy"] is None


def test_json_body_over_one_mib_is_413(api: TestClient) -> None:
    name = "x" * (1024 * 1024 + 10)
    r = api.post("/nodes", json={"name": name, "num_samples": 1})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65536
        yield b"{}"

    r = api.post("/nodes", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert api.get("/nodes").json() == []


# -- groups ----------------------------------------------------------------------------------


def test_create_group_as_operator_and_as_node(api: TestClient) -> None:
    created = new_group(api, join_policy="invite-only", max_capacity=3)
    assert created["group_token"] and created["invite_code"]
    assert new_group(api)["invite_code"] is None
    a, ta = new_node(api)
    r = api.post("/groups", json={"name": "mine", "fleet_address": "h:1"}, headers=auth(ta))
    assert r.status_code == 201
    detail = api.get(f"/groups/{r.json()['group_id']}").json()
    assert detail["members"] == [] and detail["num_members"] == 0
    assert (
        api.post(
            "/groups", json={"name": "x", "fleet_address": "h:1"}, headers=auth("bogus")
        ).status_code
        == 403
    )
    created_events = api.get("/events").json()["events"]
    assert created_events[-1]["data"]["by_node_id"] == a


@pytest.mark.parametrize(
    "fields",
    [
        {"fleet_address": "no-port"},
        {"max_capacity": 0},
        {"max_capacity": 10_001},
        {"join_policy": "closed"},
        {"performance_threshold": 1.5},
        {"name": ""},
    ],
)
def test_create_group_refuses_bad_input(api: TestClient, fields: dict[str, Any]) -> None:
    body = {"name": "g", "fleet_address": "127.0.0.1:9092", **fields}
    assert api.post("/groups", json=body, headers=auth(OPERATOR_TOKEN)).status_code == 422


def test_list_groups_task_filter_and_paging_bounds(api: TestClient) -> None:
    new_group(api, name="digits")
    other = new_group(api, name="other", task="cifar")["group_id"]
    r = api.get("/groups", params={"task": "cifar"}).json()
    assert [g["group_id"] for g in r] == [other]
    assert len(api.get("/groups").json()) == 2
    assert api.get("/groups", params={"limit": 0}).status_code == 422
    assert api.get("/groups", params={"offset": -1}).status_code == 422
    assert api.get("/groups", params={"has_capacity": "maybe"}).status_code == 422


def _group_with_accuracy(api: TestClient, name: str, accuracy: float | None) -> int:
    created = new_group(api, name=name, max_capacity=2)
    if accuracy is not None:
        body = {"round": 1, "accuracy": accuracy, "loss": 1.0, "num_nodes": 1, "num_examples": 5}
        r = api.post(
            f"/groups/{created['group_id']}/rounds",
            json=body,
            headers=auth(created["group_token"]),
        )
        assert r.status_code == 201
    return created["group_id"]


def test_discovery_order_and_capacity_filter(api: TestClient) -> None:
    low = _group_with_accuracy(api, "low", 0.5)
    best = _group_with_accuracy(api, "best", 0.9)
    unknown = _group_with_accuracy(api, "unknown", None)
    low_full = _group_with_accuracy(api, "low-full", 0.5)
    for i in range(2):
        n, t = new_node(api, f"n{i}")
        assert join(api, low_full, n, t).status_code == 200
    order = [g["group_id"] for g in api.get("/groups").json()]
    assert order == [best, low_full, low, unknown]  # ties on accuracy: more members first
    free = [g["group_id"] for g in api.get("/groups", params={"has_capacity": "true"}).json()]
    assert free == [best, low, unknown]
    full = api.get("/groups", params={"has_capacity": "false"}).json()
    assert [g["group_id"] for g in full] == [low_full] and full[0]["num_members"] == 2
    page = api.get("/groups", params={"limit": 2, "offset": 1}).json()
    assert [g["group_id"] for g in page] == [low_full, low]
    assert api.get("/groups").json()[0]["accuracy"] == 0.9


def test_dead_members_do_not_count_and_dead_groups_hidden(
    api: TestClient, clock: FakeClock
) -> None:
    created = new_group(api, max_capacity=1)
    g, gtoken = created["group_id"], created["group_token"]
    a, ta = new_node(api, "a")
    b, tb = new_node(api, "b")
    assert join(api, g, a, ta).status_code == 200
    assert join(api, g, b, tb).status_code == 409
    clock.advance(NODE_TTL + 1)  # a is dead now, b too, but b joins (a sign of life)
    assert api.post(f"/groups/{g}/heartbeat", headers=auth(gtoken)).status_code == 200
    assert api.get("/groups", params={"has_capacity": "true"}).json()[0]["num_members"] == 0
    assert join(api, g, b, tb).status_code == 200
    clock.advance(GROUP_TTL + 1)
    assert api.get("/groups").json() == []
    dead = api.get("/groups", params={"include_dead": "true"}).json()
    assert [x["group_id"] for x in dead] == [g] and dead[0]["alive"] is False


# -- membership ------------------------------------------------------------------------------


def test_join_rules(api: TestClient) -> None:
    a, ta = new_node(api, "a")
    b, tb = new_node(api, "b")
    g1 = new_group(api, max_capacity=1)["group_id"]
    g2 = new_group(api)["group_id"]
    assert join(api, 999, a, ta).status_code == 404
    assert join(api, g1, a, tb).status_code == 403
    assert api.post(f"/groups/{g1}/join", json={"node_id": a}).status_code == 401
    assert join(api, g1, a, ta).status_code == 200
    assert join(api, g1, a, ta).status_code == 200  # idempotent
    r = join(api, g1, b, tb)
    assert r.status_code == 409 and "full" in r.json()["detail"]["message"]
    r = join(api, g2, a, ta)
    assert r.status_code == 409 and r.json()["detail"]["group_id"] == g1
    assert event_types(api).count("joined") == 1


def test_invite_only(api: TestClient) -> None:
    created = new_group(api, join_policy="invite-only")
    g, code = created["group_id"], created["invite_code"]
    a, ta = new_node(api)
    assert join(api, g, a, ta).status_code == 403
    assert join(api, g, a, ta, invite_code="wrong").status_code == 403
    assert join(api, g, a, ta, invite_code=code).status_code == 200


def test_leave(api: TestClient) -> None:
    a, ta = new_node(api)
    g = new_group(api)["group_id"]
    headers = auth(ta)
    assert api.post(f"/groups/{g}/leave", json={"node_id": a}, headers=headers).status_code == 409
    join(api, g, a, ta)
    r = api.post(f"/groups/{g}/leave", json={"node_id": a}, headers=headers)
    assert r.status_code == 200
    assert api.get(f"/nodes/{a}").json()["group_id"] is None
    assert event_types(api)[-1] == "left"


def migrate(api: TestClient, node_id: int, token: str, to: int, **extra: Any) -> Any:
    body = {"to_group_id": to, "reason": "better", "expected_gain": 0.1, **extra}
    return api.post(f"/nodes/{node_id}/migrate", json=body, headers=auth(token))


def test_migrate_moves_in_one_step(api: TestClient) -> None:
    a, ta = new_node(api)
    g1 = new_group(api)["group_id"]
    g2 = new_group(api)["group_id"]
    join(api, g1, a, ta)
    r = migrate(api, a, ta, g2)
    assert r.status_code == 200
    assert r.json() == {"node_id": a, "from_group_id": g1, "to_group_id": g2}
    assert api.get(f"/nodes/{a}").json()["group_id"] == g2
    event = api.get("/events").json()["events"][-1]
    assert event["type"] == "migrated"
    assert event["data"] == {
        "from_group_id": g1,
        "to_group_id": g2,
        "reason": "better",
        "expected_gain": 0.1,
    }
    assert beat(api, a, ta, group_id=g2).status_code == 200


def test_refused_migration_leaves_node_where_it_was(api: TestClient) -> None:
    a, ta = new_node(api, "a")
    b, tb = new_node(api, "b")
    g1 = new_group(api)["group_id"]
    full = new_group(api, max_capacity=1)["group_id"]
    invite = new_group(api, join_policy="invite-only")["group_id"]
    join(api, g1, a, ta)
    join(api, full, b, tb)
    assert migrate(api, a, ta, full).status_code == 409
    assert migrate(api, a, ta, invite).status_code == 403
    assert migrate(api, a, ta, 999).status_code == 404
    assert migrate(api, a, ta, g1).status_code == 409
    assert migrate(api, a, tb, g1).status_code == 403
    assert migrate(api, a, ta, g1, expected_gain="nan").status_code == 422
    assert migrate(api, a, ta, g1, reason="r" * 501).status_code == 422
    assert api.get(f"/nodes/{a}").json()["group_id"] == g1
    assert "migrated" not in event_types(api)


# -- coordinator: rounds, models -------------------------------------------------------------


def test_rounds_recorded_and_authenticated(api: TestClient) -> None:
    created = new_group(api)
    g, token = created["group_id"], created["group_token"]
    body = {"round": 1, "accuracy": 0.7, "loss": 0.5, "num_nodes": 2, "num_examples": 100}
    assert api.post(f"/groups/{g}/rounds", json=body).status_code == 401
    _, node_token = new_node(api)
    assert api.post(f"/groups/{g}/rounds", json=body, headers=auth(node_token)).status_code == 403
    assert api.post("/groups/999/rounds", json=body, headers=auth(token)).status_code == 404
    bad = {**body, "accuracy": 2}
    assert api.post(f"/groups/{g}/rounds", json=bad, headers=auth(token)).status_code == 422
    for i in range(55):
        r = api.post(f"/groups/{g}/rounds", json={**body, "round": i}, headers=auth(token))
        assert r.status_code == 201
    detail = api.get(f"/groups/{g}").json()
    assert [x["round"] for x in detail["rounds"]] == list(range(5, 55))
    assert detail["round"] == 54 and detail["accuracy"] == 0.7


def put_model(api: TestClient, g: int, token: str, data: bytes, digest: str | None = None) -> Any:
    headers = {**auth(token), "Content-Type": "application/octet-stream"}
    if digest is not None:
        headers["X-Model-SHA256"] = digest
    return api.put(f"/groups/{g}/model", content=data, headers=headers)


def test_model_upload_and_download(api: TestClient) -> None:
    created = new_group(api)
    g, token = created["group_id"], created["group_token"]
    data = b"\x93NUMPY" + bytes(range(256)) * 4
    digest = hashlib.sha256(data).hexdigest()
    assert api.get(f"/groups/{g}/model").status_code == 404
    assert api.get("/groups/999/model").status_code == 404
    assert put_model(api, g, token, data).status_code == 400
    assert put_model(api, g, token, data, "0" * 64).status_code == 400
    assert put_model(api, g, "bogus", data, digest).status_code == 403
    big = b"x" * 20_000  # the fixture allows 0.01 MiB
    assert put_model(api, g, token, big, hashlib.sha256(big).hexdigest()).status_code == 413
    assert put_model(api, g, token, data, digest).status_code == 204
    r = api.get(f"/groups/{g}/model")
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"{digest}"' and r.headers["x-model-sha256"] == digest
    listed = api.get("/groups").json()[0]
    assert listed["has_model"] is True and listed["model_sha256"] == digest


# -- events, liveness sweep ------------------------------------------------------------------


def test_events_paging(api: TestClient) -> None:
    for i in range(5):
        new_node(api, f"n{i}")
    page = api.get("/events", params={"since": 0, "limit": 2}).json()
    assert [e["id"] for e in page["events"]] == [1, 2] and page["next_since"] == 2
    rest = api.get("/events", params={"since": 2}).json()
    assert [e["id"] for e in rest["events"]] == [3, 4, 5]
    assert rest["events"][0]["type"] == "node_registered" and rest["events"][0]["node_id"] == 3
    empty = api.get("/events", params={"since": 5}).json()
    assert empty == {"events": [], "next_since": 5}
    assert api.get("/events", params={"since": -1}).status_code == 422


def test_silent_coordinator_fails_group_and_report_revives(
    api: TestClient, clock: FakeClock
) -> None:
    created = new_group(api)
    g, token = created["group_id"], created["group_token"]
    a, ta = new_node(api)
    join(api, g, a, ta)
    clock.advance(GROUP_TTL + 1)
    beat(api, a, ta, group_id=g)
    sweep(api)
    assert api.get(f"/groups/{g}").json()["status"] == "failed"
    assert "group_failed" in event_types(api)
    b, tb = new_node(api, "b")
    assert join(api, g, b, tb).status_code == 409
    assert migrate(api, a, ta, new_group(api)["group_id"]).status_code == 200  # re-home
    assert api.post(f"/groups/{g}/heartbeat", headers=auth(token)).status_code == 200
    assert api.get(f"/groups/{g}").json()["status"] == "active"


def test_group_without_live_members_is_dissolved(api: TestClient, clock: FakeClock) -> None:
    created = new_group(api)
    g, token = created["group_id"], created["group_token"]
    a, ta = new_node(api)
    join(api, g, a, ta)
    clock.advance(NODE_TTL + GROUP_TTL / 2)  # member dead, but not for long enough yet
    api.post(f"/groups/{g}/heartbeat", headers=auth(token))
    sweep(api)
    assert api.get(f"/groups/{g}").json()["status"] == "active"
    clock.advance(GROUP_TTL / 2 + 1)
    api.post(f"/groups/{g}/heartbeat", headers=auth(token))
    sweep(api)
    detail = api.get(f"/groups/{g}").json()
    assert detail["status"] == "dissolved" and detail["members"] == []
    assert api.get(f"/nodes/{a}").json()["group_id"] is None
    assert beat(api, a, ta, group_id=None).status_code == 200
    r = api.post(f"/groups/{g}/heartbeat", headers=auth(token))
    assert r.status_code == 409
    assert event_types(api)[-2:] == ["evicted", "dissolved"]


def test_host_closing_its_group_detaches_members_at_once(api: TestClient) -> None:
    created = new_group(api)
    g, token = created["group_id"], created["group_token"]
    a, ta = new_node(api)
    join(api, g, a, ta)
    _, other_token = new_node(api, "other")
    assert api.delete(f"/groups/{g}").status_code == 401
    assert api.delete(f"/groups/{g}", headers=auth(other_token)).status_code == 403
    assert api.delete("/groups/999", headers=auth(token)).status_code == 404
    assert api.delete(f"/groups/{g}", headers=auth(token)).status_code == 204
    detail = api.get(f"/groups/{g}").json()
    assert detail["status"] == "dissolved" and detail["members"] == []
    assert beat(api, a, ta, group_id=g).json()["detail"]["group_id"] is None
    assert g not in [x["group_id"] for x in api.get("/groups").json()]
    assert join(api, g, a, ta).status_code == 409
    assert api.delete(f"/groups/{g}", headers=auth(token)).status_code == 204  # idempotent
    assert event_types(api)[-2:] == ["evicted", "dissolved"]


def test_data_survives_restart(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "registry.db"
    with registry_app(db, clock=clock) as api:
        a, ta = new_node(api)
        created = new_group(api)
        g = created["group_id"]
        join(api, g, a, ta)
        assert beat(api, a, ta, group_id=g, accuracy=0.75).status_code == 200
    with registry_app(db, clock=clock) as api:
        node = api.get(f"/nodes/{a}").json()
        assert node["group_id"] == g and node["accuracy"] == 0.75
        assert beat(api, a, ta, group_id=g).status_code == 200  # tokens survive too
        r = api.post(f"/groups/{g}/heartbeat", headers=auth(created["group_token"]))
        assert r.status_code == 200
        assert len(api.get("/events").json()["events"]) == 3
