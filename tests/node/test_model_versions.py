"""Conditional model downloads against the real registry app (TestClient): GET honours
If-None-Match with 304, the client returns the version without bytes, and a node's
placement neither downloads nor scores again a model version it has scored; the registry
counts the body bytes it sent by route (/metrics)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mycelium.flower.trainer import LocalTrainer
from mycelium.learning import data, model
from mycelium.learning.codec import weights_to_bytes
from tests.conftest import OPERATOR_TOKEN, FakeClock, registry_app
from tests.node.test_placement import placement_for, registry


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with registry_app(tmp_path / "registry.db", clock=FakeClock()) as client:
        yield client


@pytest.fixture
def fleet() -> Iterator[str]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def publish(api: TestClient, fleet: str, weights: model.Weights) -> tuple[int, str]:
    """A group with a round and ``weights`` as its model: (group id, group token)."""
    group = registry(api, OPERATOR_TOKEN).create_group(
        name="g", fleet_address=fleet, max_capacity=10
    )
    owner = registry(api, group.group_token)
    owner.report_round(
        group.group_id, round=1, accuracy=0.5, loss=1.0, num_nodes=1, num_examples=10
    )
    owner.put_model(group.group_id, weights_to_bytes(weights))
    return group.group_id, group.group_token


def model_bytes_sent(api: TestClient) -> float:
    route = 'route="/groups/{group_id}/model"'
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("mycelium_http_response_body_bytes_total") and route in line:
            if 'method="GET"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_get_model_answers_304_to_its_own_etag(api: TestClient, fleet: str) -> None:
    weights = model.get_weights(model.create_model(1))
    gid, _ = publish(api, fleet, weights)
    first = api.get(f"/groups/{gid}/model")
    etag = first.headers["ETag"]
    assert first.status_code == 200 and first.content == weights_to_bytes(weights)
    again = api.get(f"/groups/{gid}/model", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    listed = api.get(f"/groups/{gid}/model", headers={"If-None-Match": f'"x", W/{etag}'})
    assert listed.status_code == 304
    other = api.get(f"/groups/{gid}/model", headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200 and other.content == first.content

    client = registry(api)
    sha = etag.strip('"')
    unchanged = client.model_version(gid, sha)
    assert unchanged is not None and unchanged.data is None and unchanged.sha256 == sha
    fresh = client.model_version(gid, "f" * 64)
    assert fresh is not None and fresh.data == first.content
    assert client.model_version(gid + 100, sha) is None  # no such group: 404


def test_placement_skips_the_download_and_score_of_a_version_it_scored(
    api: TestClient, fleet: str
) -> None:
    mine = data.make_partition(scenario="rotate", clusters=2, index=0, num_clients=4, seed=0)
    trainer = LocalTrainer(mine, seed=0)
    gid, token = publish(api, fleet, model.get_weights(model.create_model(1)))
    client = registry(api)
    placement = placement_for(client, trainer)
    groups = client.list_groups(limit=10)
    size = len(api.get(f"/groups/{gid}/model").content)
    before = model_bytes_sent(api)
    _, first_score, _ = placement.probe(groups, gid)
    _, second_score, _ = placement.probe(groups, gid)
    assert first_score is not None and second_score == first_score
    assert (placement.downloads, placement.unchanged) == (1, 1)
    assert model_bytes_sent(api) - before == size  # the second probe moved no model bytes

    # A new version of the model is downloaded and scored again.
    newer = model.get_weights(model.create_model(2))
    registry(api, token).put_model(gid, weights_to_bytes(newer))
    _, third_score, _ = placement.probe(groups, gid)
    assert placement.downloads == 2 and third_score is not None
    placement.probe([], None)  # the group is no longer listed: its score is forgotten
    assert placement.scored == {}
