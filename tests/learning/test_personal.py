"""Personal models (issue 26): a node's own predictions, never the group's training or the
policy's scores; the adaptation default every task gets; below-local shares and records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import learning_bench
from mycelium.learning import personal, sim
from mycelium.learning.sim import personal as personal_mod
from mycelium.learning.sim import policy as policy_mod
from mycelium.learning.sim.federation import LocalModels, fedavg
from mycelium.learning.sim.metrics import effective_size, standard_error
from mycelium.learning.sim.policy import PolicyRun
from mycelium.learning.sim.run import below_local_share
from mycelium.learning.tasks.base import ADAPT_EPOCHS, Hyper, ImageTask, adapt, adaptation_hyper
from mycelium.learning.tasks.digits import DigitsTask

SMALL = sim.SimConfig("permute", 2, 6, 4, 0, 6, label_skew=0.5)


def test_below_local_share_by_hand() -> None:
    final = {0: 0.9, 1: 0.5, 2: 0.7, 3: 0.2}
    local = {0: 0.8, 1: 0.6, 2: 0.7}  # client 2 ties (not below); client 3 has no local
    assert below_local_share(final, local) == pytest.approx(1 / 3)
    assert below_local_share({}, local) == 0.0
    # below by more than each client's noise: client 1 is 0.1 below, within 0.15 of noise
    assert below_local_share(final, local, {0: 0.0, 1: 0.15, 2: 0.0}) == 0.0
    assert below_local_share(final, local, {1: 0.05}) == pytest.approx(1 / 3)


def test_the_noise_of_a_split_counts_each_repeated_image_by_its_weight() -> None:
    distinct = np.arange(40, dtype=np.float32).reshape(10, 4)
    assert effective_size(distinct) == 10.0
    repeated = np.concatenate([distinct[:1].repeat(5, axis=0), distinct[1:6]])  # 10 rows
    assert effective_size(repeated) == pytest.approx(100 / (25 + 5))
    assert effective_size(distinct[:0]) == 0.0
    assert standard_error(0.9, 100.0) == pytest.approx(0.03)
    assert standard_error(1.0, 50.0) == 0.0 and standard_error(0.5, 0.0) == 0.0
    fed = sim.Federation(SMALL)  # label-skewed: each test split repeats the pool's images
    noise = sim.run.local_noise(fed, dict.fromkeys(range(6), 0.9))
    sizes = [len(c.y_test) for c in fed.phase(0).clients]
    assert all(0.3 / np.sqrt(n) < noise[i] < 0.3 for i, n in enumerate(sizes))


def _run(fed: sim.Federation, personal: bool) -> tuple[PolicyRun, object]:
    run = PolicyRun(fed, probe=True, personal=personal)
    return run, run.run()


def test_personal_models_change_neither_the_groups_nor_the_placement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed = sim.Federation(SMALL)
    plain_run, plain = _run(fed, personal=False)
    mine_run, mine = _run(fed, personal=True)
    assert mine.history == plain.history and mine.migrations == plain.migrations
    assert mine.group_curve == plain.curve and mine.group_final == plain.final
    assert mine.curve != plain.curve  # the personal models did change what nodes get
    assert sorted(mine_run.net.models) == sorted(plain_run.net.models)
    for gid, weights in plain_run.net.models.items():
        for a, b in zip(weights, mine_run.net.models[gid], strict=True):
            np.testing.assert_array_equal(a, b)
    for gid, scores in plain_run.net.scores.items():
        np.testing.assert_array_equal(scores, mine_run.net.scores[gid])
    # whatever the personal models score, the policy's decisions stay those of plain models
    monkeypatch.setattr(
        policy_mod, "personal_accuracy", lambda _f, models, _p, _r, _l: dict.fromkeys(models, 0.0)
    )
    _, zeroed = _run(fed, personal=True)
    assert zeroed.history == plain.history and zeroed.group_curve == plain.curve
    assert all(v == 0.0 for i, v in zeroed.final.items() if i in zeroed.history[-1])


@pytest.mark.parametrize("method", ["ft", "prior"])
def test_a_node_uses_the_model_that_scores_best_on_its_validation_split(method: str) -> None:
    """Group, personal or local-only model: the best on the node's val split, ties to the
    group model, then the personal one; each scored on the node's own test split."""
    fed = sim.Federation(replace(SMALL, personal=method))
    who = list(range(6))
    updates = fed.train([fed.initial(3)] * 6, who, 0, salt=1)
    group = fedavg([(w, 1) for w in updates])  # one model of all: far from each node's labels
    trained = [group] * 6
    models = dict(enumerate(trained))
    plain = dict(zip(who, fed.own_accuracy(trained, who, 0).tolist(), strict=True))
    mine = fed.train([fed.initial(4)] * 6, who, 0, salt=2)  # local-only models, 1 round
    mine[1] = mine[4] = group  # these two nodes' local model ties with their group model
    local = dict(enumerate(mine))
    used = personal_mod.personal_accuracy(fed, models, plain, 0, local)
    if method == "ft":
        adapted, priors = fed.adapt(trained, who, 0), None
    else:
        adapted, priors = trained, fed.log_priors(0, who)
    own_val = fed.own_accuracy(adapted, who, 0, split="val", log_priors=priors)
    group_val = fed.own_accuracy(trained, who, 0, split="val")
    local_val = fed.own_accuracy(mine, who, 0, split="val")
    own_test = fed.own_accuracy(adapted, who, 0, log_priors=priors)
    local_test = fed.own_accuracy(mine, who, 0)
    expected = {}
    for i in who:
        best = max(group_val[i], own_val[i], local_val[i])
        if group_val[i] == best:
            expected[i] = plain[i]
        elif own_val[i] == best:
            expected[i] = own_test[i]
        else:
            expected[i] = local_test[i]
    assert used == pytest.approx(expected)
    assert any(own_val > group_val) and any(used[i] != plain[i] for i in who)
    assert used[1] == plain[1] or own_val[1] > group_val[1]  # a tie with local keeps the group's
    none = replace(SMALL, personal="none")
    assert personal_mod.personal_accuracy(sim.Federation(none), models, plain, 0, local) == plain
    # without local models (--no-local-fallback) the choice is between group and personal
    alone = personal_mod.personal_accuracy(fed, models, plain, 0, {})
    assert alone == pytest.approx(
        {i: own_test[i] if own_val[i] > group_val[i] else plain[i] for i in who}
    )


def test_a_node_whose_val_split_prefers_its_local_model_gets_local_figures() -> None:
    """A group model worse than every node's local model: every node falls back on its
    local-only model and scores exactly what ``local`` scores, so none is below local."""
    fed = sim.Federation(replace(SMALL, personal="prior"))
    who = list(range(6))
    bad = [np.zeros_like(a) for a in fed.initial(0)]  # predicts class 0 for everything
    own, last = LocalModels(fed), SMALL.rounds - 1
    local = {r: own.train(r) for r in range(SMALL.rounds)}[last]
    plain = dict(zip(who, fed.own_accuracy([bad] * 6, who, last).tolist(), strict=True))
    used = personal_mod.personal_accuracy(fed, dict.fromkeys(who, bad), plain, last, local)
    alone = sim.run.run_local(fed).final
    assert used == alone and below_local_share(used, alone) == 0.0
    assert all(used[i] > plain[i] for i in who)


class _UserTask(ImageTask):
    """A user's task that writes nothing for adaptation."""

    name = "user"
    dataset = DigitsTask.dataset
    hyper = Hyper(epochs=3, lr=0.2, batch_size=16, proximal_mu=0.1)
    calls: list[Hyper] = []

    def create_model(self, seed: int):  # type: ignore[no-untyped-def]
        return DigitsTask().create_model(seed)

    def train(self, model, x, y, hyper, *, seed):  # type: ignore[no-untyped-def]
        self.calls.append(hyper)
        return super().train(model, x, y, hyper, seed=seed)


def test_adaptation_default_is_the_tasks_own_train_for_one_epoch() -> None:
    task = _UserTask()
    assert adaptation_hyper(task) == Hyper(ADAPT_EPOCHS, 0.2, 16)
    model = task.create_model(0)
    x, y = np.random.default_rng(0).random((20, 64), np.float32), np.arange(20) % 10
    assert np.isfinite(adapt(task, model, x, y, seed=1))
    assert task.calls == [Hyper(ADAPT_EPOCHS, 0.2, 16)]

    class Own(_UserTask):
        adapt_hyper = Hyper(epochs=5, lr=0.01, batch_size=8)

    assert adaptation_hyper(Own()) == Own.adapt_hyper


def test_bench_json_has_the_fair_baselines_and_the_group_record(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    chosen = ["local", "oracle", "mycelium", "oracle+ft"]
    learning_bench.run_cli(
        scenarios=["permute"], clusters=2, clients=6, rounds=3, seed=0, max_capacity=None,
        algorithms=chosen, json_path=path, plot_path=None, label_skew=0.5,
    )  # fmt: skip
    body = json.loads(path.read_text())
    records = body["results"]["permute"]
    assert set(records) == {"local", "oracle", "mycelium", "mycelium-group", "oracle+ft"}
    assert records["local"]["below_local_share"] == 0.0
    assert all(0.0 <= r["below_local_share"] <= 1.0 for r in records.values())
    assert all(r["below_local_se_share"] <= r["below_local_share"] for r in records.values())
    assert body["config"]["label_skew"] == 0.5 and body["config"]["personal"] == "ens"
    assert records["mycelium"]["accuracy"] >= records["mycelium-group"]["accuracy"] - 0.05
    with pytest.raises(ValueError, match="unknown --personal 'dito'"):
        learning_bench.run_cli(
            scenarios=None, clusters=2, clients=4, rounds=1, seed=0, max_capacity=None,
            algorithms=None, json_path=None, plot_path=None, personal="dito",
        )  # fmt: skip


def test_a_node_loads_label_skewed_data_or_fails_in_one_line(tmp_path: Path) -> None:
    from mycelium.node.config import FatalNodeError, NodeConfig, load_node_data

    base = NodeConfig("n", scenario="rotate", cluster=1, partition_count=8, work_dir=tmp_path)
    plain = load_node_data(base)
    skewed = load_node_data(replace(base, label_skew=0.3))
    top = [np.bincount(d.y_train, minlength=10).max() / len(d.y_train) for d in (plain, skewed)]
    assert top[0] < 0.2 < top[1]
    assert len(skewed.y_test) == len(plain.y_test) and skewed.cluster == 1
    with pytest.raises(FatalNodeError, match="--label-skew must be a positive number"):
        load_node_data(replace(base, label_skew=-1.0))


def test_the_nodes_personal_model_is_the_simulations() -> None:
    """One implementation: the agent's adaptation of a group model (mycelium.learning.
    personal) is the simulation's for the same seed, round and client, to the last bit."""
    fed = sim.Federation(SMALL)
    who, round_ = [0, 3], 2
    group = fedavg([(w, 1) for w in fed.train([fed.initial(3)] * 2, who, 0, salt=1)])
    in_sim = fed.adapt([group, group], who, round_)
    clients = fed.phase(round_).clients

    def made(i: int, method: str) -> personal.PersonalModel | None:
        seed = personal.adaptation_seed(SMALL.seed, round_, i)
        x, y = clients[i].x_train, clients[i].y_train
        return personal.personal_model(
            fed.task, fed.task.create_model(0), group, x, y, method=method, seed=seed
        )

    for i, expected in zip(who, in_sim, strict=True):
        tuned = made(i, "ft")
        assert tuned is not None and tuned.log_prior is None
        for a, b in zip(tuned.weights, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    prior = made(0, "prior")
    assert prior is not None and prior.log_prior is not None
    np.testing.assert_array_equal(prior.log_prior, fed.log_priors(round_, [0])[0])
    assert made(0, "none") is None
    with pytest.raises(ValueError, match="unknown --personal 'tuned'; choose from ens, ft, prior"):
        personal.check_personal("tuned")


def test_the_choice_is_the_best_on_validation_with_ties_to_the_group_then_personal() -> None:
    picked = personal.choose(
        [0.90, 0.80, 0.70, 0.80, 0.60, 0.50],
        [0.80, 0.80, 0.90, 0.90, 0.70, 0.70],
        [0.95, 0.80, 0.80, 0.90, 0.70, 0.75],
    )
    names = [personal.CHOICES[k] for k in picked]
    assert names == ["local", "group", "personal", "personal", "personal", "local"]
    # a missing model (None) never wins; without personal or local models the group's does
    assert personal.choose([0.5, 0.5], [None, 0.6], [0.4, None]).tolist() == [0, 1]
    assert personal.choose([0.5, 0.0]).tolist() == [0, 0]
    assert personal.choose([0.5], None, [0.6]).tolist() == [2]
    assert personal.choose([0.9, 0.8, 0.7], [0.8, 0.8, 0.9]).tolist() == [0, 0, 1]


def test_an_ensemble_is_the_mean_of_its_members_probabilities() -> None:
    a = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    b = np.log(np.array([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]))
    np.testing.assert_allclose(
        np.exp(personal.mixture([a, b])), [[0.4, 0.4, 0.2], [0.15, 0.15, 0.7]]
    )
    np.testing.assert_allclose(personal.mixture([a, a, a]), a)
    y = np.array([0, 2])
    assert personal.nll(a, y) == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2)
    assert personal.hits(b, y) == 0.5 and personal.hits(a, y) == 1.0


def test_a_node_adds_a_member_to_its_ensemble_only_when_it_lowers_the_val_loss() -> None:
    y = np.array([0, 1])
    sure = np.log(np.array([[0.9, 0.1], [0.1, 0.9]]))
    unsure = np.log(np.array([[0.6, 0.4], [0.4, 0.6]]))
    wrong = np.log(np.array([[0.2, 0.8], [0.8, 0.2]]))
    members = personal.ensemble_members(unsure, sure, sure)
    assert len(members) == 3
    assert personal.ENSEMBLES[personal.choose_ensemble(members, y)] == "group+personal+local"
    assert personal.choose_ensemble(personal.ensemble_members(unsure, sure, wrong), y) == 1
    assert personal.choose_ensemble(personal.ensemble_members(sure, wrong, wrong), y) == 0
    assert personal.choose_ensemble(personal.ensemble_members(sure, sure, sure), y) == 0  # ties
    assert len(personal.ensemble_members(sure, sure, None)) == 2


def test_an_ens_node_predicts_with_the_ensemble_of_lowest_validation_loss() -> None:
    """``ens`` in the simulation: per node, of its group model alone, with its fine-tuned
    copy, and with its local-only model too, the lowest loss on its val split; scored on its
    own test split (here recomputed from each model's class probabilities by hand)."""
    fed = sim.Federation(replace(SMALL, personal="ens"))
    who = list(range(6))
    updates = fed.train([fed.initial(3)] * 6, who, 0, salt=1)
    group = fedavg([(w, 1) for w in updates])
    models = dict.fromkeys(who, group)
    plain = dict(zip(who, fed.own_accuracy([group] * 6, who, 0).tolist(), strict=True))
    mine = fed.train([fed.initial(4)] * 6, who, 0, salt=2)
    tuned = fed.adapt([group] * 6, who, 0)
    clients = fed.phase(0).clients

    def by_hand(local: bool) -> dict[int, float]:
        found = {}
        for i in who:
            probs = {}
            for split in ("val", "test"):
                g, t = (fed.log_probs([m], [i], 0, split)[0] for m in (group, tuned[i]))
                p = [np.exp(g), (np.exp(g) + np.exp(t)) / 2]
                if local:
                    own = np.exp(fed.log_probs([mine[i]], [i], 0, split)[0])
                    p.append((np.exp(g) + np.exp(t) + own) / 3)
                probs[split] = p
            yv, yt = clients[i].y_val, clients[i].y_test
            losses = [-np.log(q[np.arange(len(yv)), yv]).mean() for q in probs["val"]]
            k = int(np.argmin(np.round(losses, 9)))
            found[i] = plain[i] if k == 0 else float((probs["test"][k].argmax(1) == yt).mean())
        return found

    used = personal_mod.personal_accuracy(fed, models, plain, 0, dict(enumerate(mine)))
    assert used == pytest.approx(by_hand(local=True))
    assert any(used[i] != plain[i] for i in who)  # a one-round group model is beaten
    alone = personal_mod.personal_accuracy(fed, models, plain, 0, {})  # --no-local-fallback
    assert alone == pytest.approx(by_hand(local=False))


class _ProbaTask(_UserTask):
    """A user's task with its own predictive distribution (here: tempered logits)."""

    def log_probs(self, model, x):  # type: ignore[no-untyped-def]
        import torch

        with torch.no_grad():
            return torch.log_softmax(model(torch.from_numpy(x)) / 4.0, dim=-1).numpy()


def test_class_probabilities_come_from_the_task_or_its_modules_logits() -> None:
    from mycelium.learning.tasks.base import log_probs

    model = DigitsTask().create_model(0)
    x = np.random.default_rng(0).random((5, 64), np.float32)
    plain = log_probs(_UserTask(), model, x)
    np.testing.assert_allclose(np.exp(plain).sum(axis=1), 1.0, rtol=1e-5)
    tempered = log_probs(_ProbaTask(), model, x)
    assert tempered.shape == (5, 10) and not np.allclose(tempered, plain)
    np.testing.assert_array_equal(tempered.argmax(1), plain.argmax(1))
