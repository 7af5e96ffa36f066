"""Capacity and migration atomicity under real concurrent threads on a real database (a
SQLite file, and a PostgreSQL server: the ``database`` fixture)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import OPERATOR_TOKEN, auth, registry_app
from tests.postgres import query


def _nodes(api: TestClient, count: int) -> list[tuple[int, str]]:
    out = []
    for i in range(count):
        body = api.post("/nodes", json={"name": f"n{i}", "num_samples": 1}).json()
        out.append((body["node_id"], body["token"]))
    return out


def _group(api: TestClient, capacity: int) -> int:
    body = {"name": "g", "fleet_address": "127.0.0.1:9092", "max_capacity": capacity}
    return api.post("/groups", json=body, headers=auth(OPERATOR_TOKEN)).json()["group_id"]


def _members_in_db(db: Path | str, group_id: int) -> int:
    rows = query(db, "SELECT COUNT(*) FROM nodes WHERE group_id = ?", (group_id,))
    return int(rows[0][0])


def test_fifty_concurrent_joins_fill_capacity_ten_exactly(database: Path | str) -> None:
    db = database
    with registry_app(db) as api:
        nodes = _nodes(api, 50)
        group_id = _group(api, 10)

        def join(node: tuple[int, str]) -> int:
            node_id, token = node
            r = api.post(f"/groups/{group_id}/join", json={"node_id": node_id}, headers=auth(token))
            return r.status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(join, nodes))
        assert sorted(codes).count(200) == 10 and codes.count(409) == 40
        assert api.get(f"/groups/{group_id}").json()["num_members"] == 10
    assert _members_in_db(db, group_id) == 10


def test_concurrent_migrations_never_lose_a_node(database: Path | str) -> None:
    db = database
    with registry_app(db) as api:
        nodes = _nodes(api, 20)
        source, target = _group(api, 20), _group(api, 5)
        for node_id, token in nodes:
            r = api.post(f"/groups/{source}/join", json={"node_id": node_id}, headers=auth(token))
            assert r.status_code == 200

        def migrate(node: tuple[int, str]) -> int:
            node_id, token = node
            body = {"to_group_id": target, "reason": "test", "expected_gain": 0.2}
            return api.post(f"/nodes/{node_id}/migrate", json=body, headers=auth(token)).status_code

        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(migrate, nodes))
        assert codes.count(200) == 5 and codes.count(409) == 15
    assert _members_in_db(db, target) == 5
    assert _members_in_db(db, source) == 15
