"""The ServerApp's round logic: model shapes, target selection, round timeout, FedAvg of
the valid replies; and that the Flower app imports no torch."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from mycelium.api import NodePublic
from mycelium.fingerprint import model_spec
from mycelium.flower.group_registry import RoundOutcome
from mycelium.flower.rounds import RoundTimer
from mycelium.flower.strategy import (
    MODEL_SHAPES,
    LiveFedAvg,
    initial_arrays,
    select_targets,
)
from mycelium.learning import model as model_lib

ROOT = Path(__file__).resolve().parents[2]


def aggregate(replies: list[Message], shapes: Sequence[tuple[int, ...]]) -> RoundOutcome | None:
    """What the round loop makes of the strategy's aggregate_train."""
    spec = model_spec(
        [f"a{i}" for i in range(len(shapes))], [np.zeros(s, np.float32) for s in shapes]
    )
    strategy = LiveFedAvg(unclaimed_grace=0.0, spec=spec)
    arrays, metrics = strategy.aggregate_train(1, replies)
    return None if arrays is None else RoundOutcome.from_records(arrays, metrics)


def test_model_shapes_match_the_torch_model() -> None:
    torch_shapes = [a.shape for a in model_lib.get_weights(model_lib.create_model(0))]
    assert torch_shapes == list(MODEL_SHAPES)
    arrays = initial_arrays(5)
    assert [a.shape for a in arrays] == torch_shapes
    assert all(a.dtype == np.float32 for a in arrays)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, initial_arrays(5), strict=True))


def _member(fid: int | None, alive: bool) -> NodePublic:
    return NodePublic(
        node_id=fid or 99, name=f"n{fid}", address=None, task="digits", num_samples=10,
        group_id=1, flower_node_id=fid, accuracy=None, loss=None, round=None,
        last_seen=0.0, alive=alive, created_at=0.0,
    )  # fmt: skip


def test_select_targets_live_members_and_new_nodes_only() -> None:
    members = [_member(1, True), _member(2, False), _member(None, True)]
    first_seen = {1: 0.0, 2: 0.0, 3: 95.0, 4: 50.0}
    online = [4, 3, 2, 1]
    # 1 live member; 2 dead member; 3 unclaimed and new; 4 unclaimed for too long.
    assert select_targets(online, members, first_seen, 100.0, 30.0) == [1, 3]
    assert select_targets(online, members, first_seen, 100.0, 0.0) == [1]
    assert select_targets(online, None, first_seen, 100.0, 0.0) == [1, 2, 3, 4]
    assert select_targets([], members, first_seen, 100.0, 30.0) == []


def test_round_timer_adapts_and_backs_off() -> None:
    timer = RoundTimer(minimum=10.0, first=60.0, factor=3.0)
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
    out = aggregate(replies, shapes)
    assert out is not None
    np.testing.assert_allclose(out.arrays[0], [1.0, 2.0])
    np.testing.assert_allclose(out.arrays[1], [2.0])
    assert out.accuracy == pytest.approx(0.6)
    assert out.loss == pytest.approx(1.25)
    assert (out.num_nodes, out.num_examples) == (2, 40)
    assert aggregate(replies[2:], shapes) is None


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
