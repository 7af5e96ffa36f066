"""Verified group accuracy: the median of live members' reports, beside the group's claim.

A group's coordinator can claim any accuracy in its round reports; what discovery sorts by
is what its members report about its model, so a group cannot raise it without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, auth, registry_app
from tests.registry.test_api import beat, join, migrate, new_group, new_node

NODE_TTL = 90.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(database: Path | str, clock: FakeClock) -> Iterator[TestClient]:
    with registry_app(database, node_ttl=NODE_TTL, group_ttl=120.0, clock=clock) as c:
        yield c


def claim(api: TestClient, group: dict[str, Any], accuracy: float) -> None:
    body = {"round": 1, "accuracy": accuracy, "loss": 1.0, "num_nodes": 1, "num_examples": 5}
    r = api.post(
        f"/groups/{group['group_id']}/rounds", json=body, headers=auth(group["group_token"])
    )
    assert r.status_code == 201, r.text


def group_with_members(api: TestClient, name: str, reports: list[float]) -> dict[str, Any]:
    group = new_group(api, name=name, max_capacity=10)
    for k, accuracy in enumerate(reports):
        node, token = new_node(api, f"{name}-{k}")
        assert join(api, group["group_id"], node, token).status_code == 200
        assert (
            beat(api, node, token, group_id=group["group_id"], accuracy=accuracy).status_code == 200
        )
    return group


def listed(api: TestClient, clock: FakeClock) -> list[dict[str, Any]]:
    clock.advance(2.0)  # past the discovery snapshot's max age (heartbeats do not invalidate)
    return api.get("/groups").json()


def test_verified_accuracy_is_the_median_of_member_reports_beside_the_claim(
    api: TestClient,
) -> None:
    group = group_with_members(api, "g", [0.9, 0.5, 0.8])
    claim(api, group, 0.99)
    detail = api.get(f"/groups/{group['group_id']}").json()
    assert (detail["accuracy"], detail["verified_accuracy"], detail["verified_members"]) == (
        0.99,
        0.8,
        3,
    )
    empty = new_group(api, name="empty")
    shown = api.get(f"/groups/{empty['group_id']}").json()
    assert (shown["verified_accuracy"], shown["verified_members"]) == (None, 0)


def test_a_group_cannot_raise_its_verified_accuracy_without_its_members(
    api: TestClient, clock: FakeClock
) -> None:
    liar = group_with_members(api, "liar", [0.3, 0.35])
    honest = group_with_members(api, "honest", [0.8, 0.82])
    phantom = new_group(api, name="phantom")  # no members at all
    for group, accuracy in ((liar, 1.0), (honest, 0.8), (phantom, 1.0)):
        claim(api, group, accuracy)
    outsider, token = new_node(api, "outsider")  # not a member: its beat naming liar is refused
    assert beat(api, outsider, token, group_id=liar["group_id"], accuracy=1.0).status_code == 409
    order = [(g["name"], g["accuracy"], g["verified_accuracy"]) for g in listed(api, clock)]
    assert order == [
        ("honest", 0.8, pytest.approx(0.81)),
        ("liar", 1.0, pytest.approx(0.325)),
        ("phantom", 1.0, None),
    ]


def test_reports_from_a_previous_group_or_dead_members_do_not_count(
    api: TestClient, clock: FakeClock
) -> None:
    a = group_with_members(api, "a", [0.95])
    b = new_group(api, name="b")
    node, token = new_node(api, "mover")
    assert join(api, a["group_id"], node, token).status_code == 200
    assert beat(api, node, token, group_id=a["group_id"], accuracy=0.9).status_code == 200
    assert migrate(api, node, token, b["group_id"]).status_code == 200
    moved = api.get(f"/groups/{b['group_id']}").json()
    assert (moved["num_members"], moved["verified_members"]) == (1, 0)
    assert beat(api, node, token, group_id=b["group_id"], accuracy=0.4).status_code == 200
    assert api.get(f"/groups/{b['group_id']}").json()["verified_accuracy"] == 0.4
    clock.advance(NODE_TTL + 1)  # every member's last heartbeat is now too old
    for group in (a, b):
        assert api.get(f"/groups/{group['group_id']}").json()["verified_members"] == 0
