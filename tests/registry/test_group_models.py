"""Groups carry their task's model fingerprint and their strategy; uploads must fit."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mycelium.fingerprint import model_spec
from tests.conftest import OPERATOR_TOKEN, FakeClock, auth, registry_app, sha256_hex

ARRAYS = [np.zeros((10, 64), np.float32), np.zeros(10, np.float32)]
SPEC = model_spec(["fc.weight", "fc.bias"], ARRAYS)
OTHER = model_spec(["w"], [np.zeros(3, np.float32)])


@pytest.fixture
def api(database: Path | str) -> Iterator[TestClient]:
    with registry_app(database, clock=FakeClock()) as client:
        yield client


def found(api: TestClient, **extra: object) -> dict:
    body = {"name": "g", "fleet_address": "127.0.0.1:9092", "task": "mnist", **extra}
    reply = api.post("/groups", json=body, headers=auth(OPERATOR_TOKEN))
    assert reply.status_code == 201, reply.text
    return reply.json()


def npz(arrays: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def upload(api: TestClient, created: dict, data: bytes) -> object:
    headers = {**auth(created["group_token"]), "X-Model-SHA256": sha256_hex(data)}
    return api.put(f"/groups/{created['group_id']}/model", content=data, headers=headers)


def test_a_group_lists_its_fingerprint_and_strategy_and_discovery_filters(
    api: TestClient,
) -> None:
    a = found(
        api,
        fingerprint=SPEC.fingerprint,
        model_spec=SPEC.to_json(),
        strategy="fedprox",
        strategy_params={"proximal_mu": 0.1},
    )
    b = found(api, fingerprint=OTHER.fingerprint, model_spec=OTHER.to_json())
    plain = found(api, task="digits")
    listed = {g["group_id"]: g for g in api.get("/groups").json()}
    assert listed[a["group_id"]]["fingerprint"] == SPEC.fingerprint
    assert listed[a["group_id"]]["strategy"] == "fedprox"
    assert listed[a["group_id"]]["strategy_params"] == {"proximal_mu": 0.1}
    assert (listed[b["group_id"]]["strategy"], listed[plain["group_id"]]["fingerprint"]) == (
        "fedavg",
        None,
    )

    def ids(**query: str) -> list[int]:
        return [g["group_id"] for g in api.get("/groups", params=query).json()]

    assert ids(fingerprint=SPEC.fingerprint) == [a["group_id"]]
    assert ids(strategy="fedprox") == [a["group_id"]]
    assert ids(task="mnist", strategy="fedavg") == [b["group_id"]]
    assert api.get("/groups", params={"strategy": "fedsgd"}).status_code == 422
    assert api.get("/groups", params={"fingerprint": "md5:x"}).status_code == 422
    detail = api.get(f"/groups/{a['group_id']}").json()
    assert detail["model_spec"] == SPEC.to_json()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"fingerprint": SPEC.fingerprint}, "fingerprint and model_spec go together"),
        ({"fingerprint": OTHER.fingerprint, "model_spec": SPEC.to_json()}, "does not match"),
        ({"fingerprint": SPEC.fingerprint, "model_spec": [["a", [1]]]}, "not [name, shape"),
        ({"strategy": "fedsgd"}, "fedavg"),
        ({"strategy_params": {"Mu": 1.0}}, "should match pattern"),
    ],
)
def test_bad_group_models_or_strategies_are_422(api: TestClient, extra: dict, message: str) -> None:
    body = {"name": "g", "fleet_address": "127.0.0.1:9092", **extra}
    reply = api.post("/groups", json=body, headers=auth(OPERATOR_TOKEN))
    assert reply.status_code == 422
    assert message in reply.text


def test_uploads_that_do_not_fit_the_fingerprint_are_refused(api: TestClient) -> None:
    created = found(api, fingerprint=SPEC.fingerprint, model_spec=SPEC.to_json())
    assert upload(api, created, npz(ARRAYS)).status_code == 204
    wrong_shape = upload(api, created, npz([np.zeros((64, 10), np.float32), ARRAYS[1]]))
    assert wrong_shape.status_code == 422
    assert "array 0 (fc.weight) is float32[64, 10]" in wrong_shape.json()["detail"]
    wrong_dtype = upload(api, created, npz([ARRAYS[0], np.zeros(10, np.float64)]))
    assert "array 1 (fc.bias) is float64[10]" in wrong_dtype.json()["detail"]
    assert "is not an npz" in upload(api, created, b"not a zip").json()["detail"]
    model = api.get(f"/groups/{created['group_id']}/model")
    assert model.content == npz(ARRAYS)  # the refused uploads did not replace it


def test_a_group_without_a_fingerprint_takes_any_model(api: TestClient) -> None:
    created = found(api)
    assert upload(api, created, npz([np.ones(3, np.float64)])).status_code == 204


def test_an_older_database_file_gets_the_new_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE groups (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
            "fleet_address TEXT NOT NULL, task TEXT NOT NULL, max_capacity INTEGER NOT NULL, "
            "join_policy TEXT NOT NULL, performance_threshold REAL NOT NULL, "
            "token_hash TEXT NOT NULL, invite_hash TEXT, status TEXT NOT NULL DEFAULT 'active', "
            "accuracy REAL, loss REAL, round INTEGER, model_sha256 TEXT, "
            "last_report REAL NOT NULL, last_live_at REAL NOT NULL, created_at REAL NOT NULL)"
        )
    with registry_app(db, clock=FakeClock()) as client:
        created = found(client, strategy="fedyogi")
        assert client.get(f"/groups/{created['group_id']}").json()["strategy"] == "fedyogi"
