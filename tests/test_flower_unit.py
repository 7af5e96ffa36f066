"""Unit tests of the Flower runtime's plain parts: node-config quoting (checked with Flower's
own parser), the warm trainer and its HTTP endpoint, and the ServerApp's round logic."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.common.config import parse_config_args

from mycelium.learning import model as model_lib
from mycelium.learning.codec import weights_to_bytes
from mycelium.learning.data import make_partition
from mycelium.supernode import format_node_config
from mycelium.trainer import (
    META_HEADER,
    FitError,
    LocalTrainer,
    TrainerServer,
    request_fit,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "flower_app"))

from mycelium_flower import server_app  # noqa: E402

# -- node-config quoting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"trainer-url": "http://127.0.0.1:8000", "registry-node-id": 7},
        {"name": "with spaces and = signs", "lr": 0.05, "flag": True, "off": False},
        {"quote": "it's", "backslash": "C:\\path\\x", "empty": ""},
        {"big": 2**63 + 5, "neg": -3, "tiny": 1e-9, "unicode": "héllo wörld"},
    ],
)
def test_node_config_round_trips_through_flowers_parser(config: dict) -> None:
    assert parse_config_args([format_node_config(config)]) == config


@pytest.mark.parametrize(
    "config",
    [
        {"both": 'it\'s "x"'},
        {"bad key": 1},
        {"nan": float("nan")},
        {"newline": "a\nb"},
        {"list": [1, 2]},
    ],
)
def test_node_config_refuses_what_cannot_round_trip(config: dict) -> None:
    with pytest.raises(ValueError):
        format_node_config(config)


# -- trainer -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer() -> LocalTrainer:
    data = make_partition(scenario="rotate", clusters=2, index=0, num_clients=4, seed=0)
    return LocalTrainer(data, seed=0)


@pytest.fixture(scope="module")
def server(trainer: LocalTrainer) -> Iterator[tuple[str, int]]:
    srv = TrainerServer(trainer)
    url = srv.start()
    try:
        yield url, int(url.rsplit(":", 1)[1])
    finally:
        srv.stop()


def test_hyper_parameter_defaults_are_the_learning_cores(trainer: LocalTrainer) -> None:
    core = (model_lib.EPOCHS, model_lib.LEARNING_RATE, model_lib.BATCH_SIZE)
    d = trainer.defaults
    assert (d.epochs, d.lr, d.batch_size) == core
    app_config = tomllib.loads((ROOT / "flower_app/pyproject.toml").read_text())
    run_config = app_config["tool"]["flwr"]["app"]["config"]
    settings = server_app.Settings.from_run_config(run_config)
    assert settings == server_app.Settings()  # the ServerApp's defaults are the app's
    # By default a group sends no hyper-parameters: members use the learning core's.
    assert dict(settings.train_config(3)) == {"server-round": 3}
    chosen = server_app.Settings(local_epochs=3, lr=0.2, batch_size=-1).train_config(1)
    assert dict(chosen) == {"server-round": 1, "local-epochs": 3, "lr": 0.2}


def test_fit_scores_incoming_model_then_trains(trainer: LocalTrainer) -> None:
    incoming = server_app.initial_arrays(3)
    loss, acc = trainer.evaluate_arrays(incoming)
    result = trainer.fit(incoming, {"local-epochs": 2}, round=4, flower_node_id=99)
    assert result.metrics["val_accuracy"] == pytest.approx(acc)
    assert result.metrics["val_loss"] == pytest.approx(loss)
    assert result.metrics["post_val_accuracy"] > acc  # two epochs beat a random init
    assert result.num_examples == trainer.num_examples > 0
    assert [a.shape for a in result.arrays] == [a.shape for a in incoming]
    assert not all(np.array_equal(a, b) for a, b in zip(result.arrays, incoming, strict=True))
    assert (trainer.last_round, trainer.flower_node_id) == (4, 99)
    assert trainer.group_score == pytest.approx(acc)
    assert trainer.last_group_arrays is not None
    assert all(
        np.array_equal(a, b) for a, b in zip(trainer.last_group_arrays, incoming, strict=True)
    )
    assert trainer.last_fit_at is not None and abs(trainer.last_fit_at - time.time()) < 60


def test_fit_refuses_bad_arrays_and_config(trainer: LocalTrainer) -> None:
    good = server_app.initial_arrays(0)
    with pytest.raises(ValueError, match="shapes"):
        trainer.fit(good[:2], {})
    with pytest.raises(ValueError, match="NaN"):
        trainer.fit([np.full_like(a, np.nan) for a in good], {})
    with pytest.raises(ValueError, match="lr"):
        trainer.fit(good, {"lr": -1.0})
    with pytest.raises(ValueError, match="batch-size"):
        trainer.fit(good, {"batch-size": 0})


def test_warm_up_trains_the_local_model() -> None:
    data = make_partition(scenario="rotate", clusters=2, index=1, num_clients=4, seed=0)
    fresh = LocalTrainer(data, seed=1)
    before = fresh.local_score()
    fresh.warm_up(5)
    assert fresh.local_score() > before + 0.2


def test_request_fit_round_trip(server: tuple[str, int], trainer: LocalTrainer) -> None:
    url, _ = server
    result = request_fit(url, server_app.initial_arrays(1), {"local-epochs": 1}, round=7)
    assert result.num_examples == trainer.num_examples
    assert set(result.metrics) >= {"val_accuracy", "val_loss", "train_loss", "post_val_accuracy"}
    assert trainer.last_round == 7


def _post(port: int, body: bytes, headers: dict[str, str], path: str = "/fit") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (b"not an npz", {}, 400, "npz"),
        (b"", {}, 400, "empty body"),
        (weights_to_bytes(server_app.initial_arrays(0)), {META_HEADER: "{oops"}, 400, "JSON"),
        (
            weights_to_bytes(server_app.initial_arrays(0)),
            {META_HEADER: '{"round": "x"}'},
            400,
            "round",
        ),
        (weights_to_bytes([np.zeros((3, 3), np.float32)]), {}, 400, "shapes"),
        (
            weights_to_bytes(server_app.initial_arrays(0)),
            {META_HEADER: json.dumps({"config": {"lr": "fast"}})},
            400,
            "lr",
        ),
    ],
)
def test_trainer_server_rejects_bad_requests(
    server: tuple[str, int], body: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    _, port = server
    got, text = _post(port, body, headers)
    assert got == status
    assert fragment in json.loads(text)["detail"]


def test_trainer_server_unknown_path_and_oversize(server: tuple[str, int]) -> None:
    _, port = server
    assert _post(port, b"x", {}, path="/nope")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", "/fit")
        conn.putheader("Content-Length", str(10**12))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_request_fit_reports_refusals_and_unreachable(server: tuple[str, int]) -> None:
    url, _ = server
    with pytest.raises(FitError, match="400"):
        request_fit(url, [np.zeros(3, np.float32)], {})
    with pytest.raises(FitError, match="unreachable"):
        request_fit("http://127.0.0.1:9", server_app.initial_arrays(0), {}, timeout=2)


# -- ServerApp logic --------------------------------------------------------------------------


def test_model_shapes_match_the_torch_model() -> None:
    torch_shapes = [a.shape for a in model_lib.get_weights(model_lib.create_model(0))]
    assert torch_shapes == list(server_app.MODEL_SHAPES)
    arrays = server_app.initial_arrays(5)
    assert [a.shape for a in arrays] == torch_shapes
    assert all(a.dtype == np.float32 for a in arrays)
    assert all(
        np.array_equal(a, b) for a, b in zip(arrays, server_app.initial_arrays(5), strict=True)
    )


def _member(fid: int | None, alive: bool) -> dict:
    return {"flower_node_id": fid, "alive": alive}


def test_select_targets_live_members_and_new_nodes_only() -> None:
    members = [_member(1, True), _member(2, False), _member(None, True)]
    first_seen = {1: 0.0, 2: 0.0, 3: 95.0, 4: 50.0}
    online = [4, 3, 2, 1]
    # 1 live member; 2 dead member; 3 unclaimed and new; 4 unclaimed for too long.
    assert server_app.select_targets(online, members, first_seen, 100.0, 30.0) == [1, 3]
    assert server_app.select_targets(online, members, first_seen, 100.0, 0.0) == [1]
    assert server_app.select_targets(online, None, first_seen, 100.0, 0.0) == [1, 2, 3, 4]
    assert server_app.select_targets([], members, first_seen, 100.0, 30.0) == []


def test_round_timer_adapts_and_backs_off() -> None:
    timer = server_app.RoundTimer(minimum=10.0, first=60.0, factor=3.0)
    assert timer.timeout == 60.0
    for d in (4.0, 5.0, 6.0):
        timer.observe(d, replies=3, expected=3)
    assert timer.timeout == 15.0  # 3 x median 5
    timer.observe(15.0, replies=2, expected=3)  # partial round: not a sample
    assert timer.timeout == 15.0
    timer.observe(15.0, replies=0, expected=3)  # nothing came back: double
    assert timer.timeout == 30.0
    timer.observe(1.0, replies=1, expected=1)
    assert timer.timeout == 13.5  # 3 x median of (4, 5, 6, 1) = 3 x 4.5
    for _ in range(20):
        timer.observe(0.1, replies=1, expected=1)
    assert timer.timeout == 10.0


def _reply(src: int, arrays: list[np.ndarray], n: int, acc: float, loss: float) -> Message:
    meta = Metadata(1, "m", src, 0, "r", "", time.time(), 60.0, MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord(arrays),
            "metrics": MetricRecord({"num-examples": n, "val_accuracy": acc, "val_loss": loss}),
        }
    )
    return make_message(meta, content=content)


def test_aggregate_weights_by_examples_and_skips_bad_replies() -> None:
    shapes = [(2,), (1,)]
    a = [np.array([0.0, 0.0], np.float32), np.array([1.0], np.float32)]
    b = [np.array([4.0, 8.0], np.float32), np.array([5.0], np.float32)]
    meta = Metadata(1, "e", 9, 0, "r", "", time.time(), 60.0, MessageType.TRAIN)
    replies = [
        _reply(1, a, 30, 0.5, 1.0),
        _reply(2, b, 10, 0.9, 2.0),
        _reply(3, [np.zeros(3, np.float32), np.zeros(1, np.float32)], 50, 1.0, 0.0),  # shapes
        _reply(4, a, 0, 1.0, 0.0),  # no examples
        make_message(meta, error=Error(2, "boom")),
    ]
    out = server_app.aggregate(replies, shapes)
    assert out is not None
    np.testing.assert_allclose(out.arrays[0], [1.0, 2.0])
    np.testing.assert_allclose(out.arrays[1], [2.0])
    assert out.accuracy == pytest.approx(0.6)
    assert out.loss == pytest.approx(1.25)
    assert (out.num_nodes, out.num_examples) == (2, 40)
    assert server_app.aggregate(replies[2:], shapes) is None


def test_flower_app_modules_do_not_import_torch() -> None:
    code = (
        "import sys; sys.path.insert(0, 'flower_app');"
        "import mycelium_flower.server_app, mycelium_flower.client_app;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
