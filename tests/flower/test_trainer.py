"""The warm trainer (torch side) and its loopback HTTP endpoint (HTTP side)."""

from __future__ import annotations

import http.client
import json
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mycelium.flower.errors import FitError
from mycelium.flower.protocol import META_HEADER, FitMeta, RunConfig
from mycelium.flower.rounds import group_token, train_config
from mycelium.flower.strategy import initial_arrays
from mycelium.flower.trainer import LocalTrainer
from mycelium.flower.trainer_http import TrainerServer, request_fit
from mycelium.learning import model as model_lib
from mycelium.learning.codec import weights_to_bytes
from mycelium.learning.data import make_partition

ROOT = Path(__file__).resolve().parents[2]


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
    settings = RunConfig.from_run_config(app_config["tool"]["flwr"]["app"]["config"])
    # By default a group sends no hyper-parameters: members use the learning core's.
    assert dict(train_config(settings, 3)) == {"server-round": 3}
    chosen = train_config(RunConfig(local_epochs=3, lr=0.2), 1)
    assert dict(chosen) == {"server-round": 1, "local-epochs": 3, "lr": 0.2}


def test_fit_scores_incoming_model_then_trains(trainer: LocalTrainer) -> None:
    incoming = initial_arrays(3)
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
    good = initial_arrays(0)
    with pytest.raises(ValueError, match="model has 2 arrays, the fingerprint .* expects 4"):
        trainer.fit(good[:2], {})
    with pytest.raises(ValueError, match=r"array 1 \(0.bias\) is float64\[64\]"):
        trainer.fit([good[0], good[1].astype(np.float64), *good[2:]], {})
    with pytest.raises(ValueError, match="proximal-mu"):
        trainer.fit(good, {"proximal-mu": -0.5})
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
    result = request_fit(url, initial_arrays(1), FitMeta(7, None, {"local-epochs": 1}))
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
        (weights_to_bytes(initial_arrays(0)), {META_HEADER: "{oops"}, 400, "JSON"),
        (
            weights_to_bytes(initial_arrays(0)),
            {META_HEADER: '{"round": "x"}'},
            400,
            "round",
        ),
        (weights_to_bytes([np.zeros((3, 3), np.float32)]), {}, 400, "the fingerprint"),
        (
            weights_to_bytes(initial_arrays(0)),
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
        request_fit(url, [np.zeros(3, np.float32)], FitMeta())
    with pytest.raises(FitError, match="unreachable"):
        request_fit("http://127.0.0.1:9", initial_arrays(0), FitMeta(), timeout=2)


def test_the_serverapp_reads_its_group_token_from_the_hosts_file(tmp_path: Path) -> None:
    token_file = tmp_path / "group.token"
    token_file.write_text("the-token\n")
    settings = RunConfig.from_run_config({"group-token-file": str(token_file)})
    assert group_token(settings) == "the-token" and "the-token" not in repr(settings)
    assert group_token(RunConfig()) is None
    assert group_token(RunConfig(group_token_file=str(tmp_path / "missing"))) is None


def _skewed_trainer(personal: str) -> LocalTrainer:
    data = make_partition(
        scenario="rotate", clusters=2, index=1, num_clients=4, seed=3, label_skew=0.3
    )
    return LocalTrainer(data, seed=3, personal=personal)


@pytest.mark.parametrize("method", ["ft", "ens"])
def test_personalisation_changes_neither_the_fit_reply_nor_the_placement_scores(
    method: str,
) -> None:
    """The group aggregates plain updates and placement scores plain group models: a node
    that personalises between rounds replies and probes exactly as one that does not."""
    on, off = _skewed_trainer(method), _skewed_trainer("none")
    model = initial_arrays(5)
    for rnd in (1, 2):
        replies = [t.fit(model, {}, round=rnd) for t in (on, off)]
        scores = on.personalise()
        assert scores is not None and scores.round == rnd and scores.method == method
        assert on.personalise() is None  # at most once per group model
        assert off.personalise() is not None
        a, b = replies
        assert a.metrics == b.metrics and a.num_examples == b.num_examples
        for x, y in zip(a.arrays, b.arrays, strict=True):
            np.testing.assert_array_equal(x, y)
        assert on.group_score == off.group_score
        assert on.evaluate_arrays(model) == off.evaluate_arrays(model)
        model = a.arrays  # the next round's group model


def test_the_personal_model_is_used_only_where_it_beats_the_group_model() -> None:
    trainer = _skewed_trainer("ft")
    assert trainer.personalise() is None  # no group model yet
    trainer.fit(initial_arrays(5), {"local-epochs": 1}, round=1)
    assert trainer.wait_for_group_model(0.0) and not trainer.wait_for_group_model(0.0)
    s = trainer.personalise()
    assert s is not None and s.personal_val_accuracy is not None
    assert s.local_val_accuracy is not None
    best = max(s.group_val_accuracy, s.personal_val_accuracy, s.local_val_accuracy)
    assert s.val_accuracy == best
    assert s.uses_personal == (s.group_val_accuracy < best)
    assert s.group_test_accuracy == pytest.approx(
        trainer.test_accuracy(trainer.last_group_arrays or [])
    )
    if s.predicts_with == "personal":
        assert s.val_accuracy == s.personal_val_accuracy > s.group_val_accuracy
    elif s.predicts_with == "local":
        assert s.val_accuracy == s.local_val_accuracy > s.group_val_accuracy
    else:
        assert (s.val_accuracy, s.test_accuracy) == (s.group_val_accuracy, s.group_test_accuracy)
    assert s.uses_personal  # one epoch on its skewed labels beats a one-epoch group model
    models = trainer.predicting_models()  # kept beside the group model, for its predictions
    assert models is not None and len(models) == 1
    kept = models[0]
    assert kept.log_prior is None
    assert trainer.test_accuracy(kept.weights) == pytest.approx(s.test_accuracy)
    plain = _skewed_trainer("none")
    plain.fit(initial_arrays(5), {"local-epochs": 1}, round=1)
    p = plain.personalise()
    assert p is not None and not p.uses_personal and p.personal_val_accuracy is None
    assert p.local_val_accuracy is None and p.predicts_with == "group"
    assert p.test_accuracy == p.group_test_accuracy == s.group_test_accuracy
    only = plain.predicting_models()
    assert only is not None and len(only) == 1 and plain.last_group_arrays is not None
    for x, y in zip(only[0].weights, plain.last_group_arrays, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="unknown --personal"):
        _skewed_trainer("best")


def test_an_ens_node_predicts_with_the_ensemble_of_lowest_validation_loss() -> None:
    """``ens``: the node keeps the group model, plus its fine-tuned copy, plus its own
    local-only model, as far as each lowers its val loss; its figures are those of the mean
    of the kept models' class probabilities (recomputed here from their weights)."""
    from mycelium.learning.personal import ENSEMBLES, mixture, nll

    trainer = _skewed_trainer("ens")
    trainer.warm_up(20)
    data = make_partition(
        scenario="rotate", clusters=2, index=1, num_clients=4, seed=3, label_skew=0.3
    )
    model = initial_arrays(5)
    for rnd in (1, 2, 3):
        model = trainer.fit(model, {"local-epochs": 1}, round=rnd).arrays
        s = trainer.personalise()
        kept = trainer.predicting_models()
        assert s is not None and kept is not None and s.method == "ens"
        assert s.predicts_with == ENSEMBLES[len(kept) - 1]
        assert s.uses_personal == (len(kept) > 1)
        for m, expected in zip(kept[0].weights, trainer.last_group_arrays or [], strict=True):
            np.testing.assert_array_equal(m, expected)
        probs = {split: [_log_probs(m.weights, x) for m in kept] for split, x in
                 (("val", data.x_val), ("test", data.x_test))}  # fmt: skip
        ensemble = mixture(probs["test"])
        assert s.test_accuracy == pytest.approx(float((ensemble.argmax(1) == data.y_test).mean()))
        assert s.group_test_accuracy == pytest.approx(trainer.test_accuracy(kept[0].weights))
        kept_loss = nll(mixture(probs["val"]), data.y_val)
        assert kept_loss <= nll(probs["val"][0], data.y_val)
    assert s.predicts_with != "group"  # a two-round group model gains from the node's models


def _log_probs(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    import torch

    model = model_lib.create_model(0)
    model_lib.set_weights(model, weights)
    with torch.no_grad():
        return torch.log_softmax(model(torch.from_numpy(np.asarray(x, np.float32))), 1).numpy()


def test_a_node_falls_back_on_its_own_local_model_when_its_val_split_prefers_it() -> None:
    """The node's local-only model (a copy of the warmed-up one, one more round per group
    model) is a candidate: against a fresh group model it wins, and the local model the
    placement uses (its score, the arrays a founder seeds a group with) is untouched."""
    trainer = _skewed_trainer("ft")
    trainer.warm_up(20)
    warm, warm_score = trainer.local_arrays(), trainer.local_score()
    seen = []
    for rnd in (1, 2):
        trainer.fit(initial_arrays(5), {"local-epochs": 1}, round=rnd)
        s = trainer.personalise()
        assert s is not None and s.predicts_with == "local" and s.uses_personal
        assert s.local_val_accuracy == s.val_accuracy > s.group_val_accuracy
        models = trainer.predicting_models()
        assert models is not None and len(models) == 1
        kept = models[0]
        assert kept.log_prior is None
        assert trainer.test_accuracy(kept.weights) == pytest.approx(s.test_accuracy)
        seen.append(kept.weights)
    assert not all(np.array_equal(a, b) for a, b in zip(*seen, strict=True))  # trains on
    assert trainer.local_score() == warm_score
    for a, b in zip(trainer.local_arrays(), warm, strict=True):
        np.testing.assert_array_equal(a, b)
