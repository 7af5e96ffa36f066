"""Who may create a group: a registered node (bounded) or the operator; nobody anonymous."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mycelium import launch
from mycelium.client import (
    MIN_TOKEN_CHARS,
    Forbidden,
    LimitReached,
    RegistryClient,
    TokenFileError,
    read_token_file,
    write_token_file,
)
from mycelium.procs import free_port
from mycelium.registry.settings import Settings
from tests.conftest import ROOT, auth, registry_app

OPERATOR = "operator-token-of-the-auth-tests"
BODY = {"name": "g", "fleet_address": "127.0.0.1:9092"}


@pytest.fixture
def api(database: Path | str) -> Iterator[TestClient]:
    with registry_app(database, operator_token=OPERATOR, max_groups_per_node=2) as client:
        yield client


def new_node(api: TestClient) -> dict[str, Any]:
    return api.post("/nodes", json={"name": "n", "num_samples": 1}).json()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Bearer    "}, {"Authorization": "x"}],
)
def test_anonymous_group_creation_is_401(api: TestClient, headers: dict[str, str]) -> None:
    r = api.post("/groups", json=BODY, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer" and "operator" in r.json()["detail"]
    assert api.get("/groups").json() == []


def test_a_token_that_is_neither_a_nodes_nor_the_operators_is_403(api: TestClient) -> None:
    group = api.post("/groups", json=BODY, headers=auth(OPERATOR)).json()
    for token in ("bogus", group["group_token"], OPERATOR + "x"):
        r = api.post("/groups", json=BODY, headers=auth(token))
        assert r.status_code == 403 and "operator" in r.json()["detail"]


def test_a_node_creates_a_bounded_number_of_live_groups(api: TestClient) -> None:
    node = new_node(api)
    made = [api.post("/groups", json=BODY, headers=auth(node["token"])) for _ in range(3)]
    assert [r.status_code for r in made] == [201, 201, 429]
    assert "at most 2" in made[2].json()["detail"]
    events = api.get("/events").json()["events"]
    created = [e["data"]["by_node_id"] for e in events if e["type"] == "group_created"]
    assert created == [node["node_id"], node["node_id"]]
    other = new_node(api)  # the allowance is per node
    assert api.post("/groups", json=BODY, headers=auth(other["token"])).status_code == 201
    first = made[0].json()
    api.delete(f"/groups/{first['group_id']}", headers=auth(first["group_token"]))
    assert api.post("/groups", json=BODY, headers=auth(node["token"])).status_code == 201


def test_the_operator_is_not_bounded_and_is_recorded_as_no_node(api: TestClient) -> None:
    for _ in range(4):
        assert api.post("/groups", json=BODY, headers=auth(OPERATOR)).status_code == 201
    events = api.get("/events").json()["events"]
    assert [e["data"]["by_node_id"] for e in events] == [None] * 4


def test_the_client_raises_typed_errors(api: TestClient) -> None:
    node = RegistryClient("http://testserver", http=api)
    node.register_node(name="n", num_samples=1)
    node.create_group(name="a", fleet_address="h:1")
    node.create_group(name="b", fleet_address="h:2")
    with pytest.raises(LimitReached) as limited:
        node.create_group(name="c", fleet_address="h:3")
    assert limited.value.status_code == 429
    with pytest.raises(Forbidden) as anonymous:
        RegistryClient("http://testserver", http=api).create_group(name="d", fleet_address="h:4")
    assert anonymous.value.status_code == 401
    operator = RegistryClient("http://testserver", token=OPERATOR, http=api)
    assert operator.create_group(name="e", fleet_address="h:5").group_id == 3


def test_without_an_operator_token_only_nodes_create_groups(tmp_path: Path) -> None:
    with registry_app(tmp_path / "r.db", operator_token=None) as api:
        assert api.post("/groups", json=BODY, headers=auth(OPERATOR)).status_code == 403
        node = new_node(api)
        assert api.post("/groups", json=BODY, headers=auth(node["token"])).status_code == 201


def test_settings_never_show_the_operator_token(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "r.db", operator_token=OPERATOR)
    assert OPERATOR not in repr(settings) and OPERATOR not in str(settings)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file"),
        ("", "at least"),
        ("short\n", "at least"),
        ("two words of a long enough token\n", "no whitespace"),
    ],
)
def test_read_token_file_refuses_in_one_line(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "operator.token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenFileError, match=reason) as refused:
        read_token_file(path)
    assert "\n" not in str(refused.value)
    if content:
        assert content.strip() not in str(refused.value)


def test_read_token_file_strips_the_newline(tmp_path: Path) -> None:
    path = tmp_path / "operator.token"
    path.write_text("t" * MIN_TOKEN_CHARS + "\n")
    assert read_token_file(path) == "t" * MIN_TOKEN_CHARS


def test_write_token_file_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "operator.token"
    token = write_token_file(path)
    assert read_token_file(path) == token and len(token) >= MIN_TOKEN_CHARS
    assert path.stat().st_mode & 0o777 == 0o600
    assert write_token_file(path) != token  # a new one each time


def test_registry_process_with_an_operator_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "operator.token"
    token_file.write_text(OPERATOR + "\n")
    log = tmp_path / "registry.log"
    with launch.registry_process(
        db=tmp_path / "r.db", log_path=log, operator_token_file=token_file, log_level="debug"
    ) as reg:
        assert httpx.post(f"{reg.url}/groups", json=BODY, timeout=10).status_code == 401
        r = httpx.post(f"{reg.url}/groups", json=BODY, headers=auth(OPERATOR), timeout=10)
        assert r.status_code == 201
    text = log.read_text()
    assert "groups may be created by nodes and the operator" in text
    assert OPERATOR not in text


def test_registry_cli_refuses_a_bad_operator_token_file(tmp_path: Path) -> None:
    short = tmp_path / "short.token"
    short.write_text("hunter2\n")
    for path in (tmp_path / "missing.token", short):
        cmd = launch.registry_command(
            port=free_port(), db=tmp_path / "r.db", operator_token_file=path
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "token file" in done.stderr
        assert "Traceback" not in done.stderr and "hunter2" not in done.stderr


def test_group_command_refuses_a_bad_operator_token_file(tmp_path: Path) -> None:
    cmd = launch.cli_command(
        "group",
        registry_url=f"http://127.0.0.1:{free_port()}",
        work_dir=tmp_path / "g",
        operator_token_file=tmp_path / "missing.token",
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "token file" in done.stderr
