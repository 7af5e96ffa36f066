"""What a learning task is: the :class:`Task` protocol, and :class:`ImageTask`, a base class
that gives a task everything but its model.

A task is one object: a ``name`` (the registry's ``task``), default hyper-parameters,
``create_model(seed)`` (a torch ``nn.Module`` whose ``state_dict`` order is the order of the
arrays on the wire), ``load_data(request)`` (a node's train / val / test splits), and
``train``/``evaluate`` on one module with the :class:`Hyper` parameters a group may send
(``epochs``, ``lr``, ``batch_size``, ``proximal_mu`` for FedProx). A task may add the
batched ``train_many`` / ``evaluate_matrix`` / ``evaluate_pairs`` of :class:`BatchedTask`
for the simulation; :func:`mycelium.learning.tasks.ops.batched` runs models one by one otherwise.
A task may also offer the *prior-shifted score* of :class:`PriorTask`: ``label_log_prior(y)``,
and ``log_prior=`` on ``evaluate`` (``log_priors=`` on the batched ones) to add a node's own
label log-prior to every model's logits before counting; nodes score groups that way (see
docs/learning.md, "prior-shifted scores"). Every :class:`ImageTask` has it. A task whose
module does not map a batch of features to class logits gives its own predictive
distribution through :class:`ProbaTask`'s ``log_probs``; :func:`log_probs` is the default
every other task gets (a node's ensemble of its group and personal models needs it).
:class:`ImageTask`, :class:`BatchedImageTask` and
:class:`~mycelium.learning.tasks.batched.StackedTask` are base classes that leave a task little
more than its model to write.

torch is imported inside the functions that train, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from mycelium import config
from mycelium.fingerprint import ModelSpec, model_spec
from mycelium.learning import data as data_mod
from mycelium.learning.data import ClientData, Dataset

if TYPE_CHECKING:
    from torch import nn

Weights = list[np.ndarray]


@dataclass(frozen=True)
class Hyper:
    """Local training hyper-parameters (a group may override each per round).

    ``proximal_mu`` > 0 adds FedProx's ``mu / 2 * ||w - w_start||^2`` to the loss."""

    epochs: int
    lr: float
    batch_size: int
    proximal_mu: float = 0.0


@dataclass(frozen=True)
class DataRequest:
    """Which data a node loads: its own ``.npz`` (``path``), or client ``index`` of
    ``num_clients`` of a clustered ``scenario`` (cluster ``index % clusters`` unless given)."""

    scenario: str = config.SCENARIO
    clusters: int = config.CLUSTERS
    index: int = 0
    num_clients: int = 1
    seed: int = 0
    cluster: int | None = None
    path: Path | None = None
    label_skew: float | None = None  # Dirichlet ALPHA of labels inside each cluster


@runtime_checkable
class Task(Protocol):
    """The interface every part of Mycelium Net uses (node, group, demo, simulation)."""

    name: str
    hyper: Hyper
    scenarios: tuple[str, ...]

    def create_model(self, seed: int) -> nn.Module: ...

    def load_data(self, request: DataRequest) -> ClientData: ...

    def train(
        self, model: nn.Module, x: np.ndarray, y: np.ndarray, hyper: Hyper, *, seed: int
    ) -> float:
        """Train ``model`` in place; the mean mini-batch loss."""
        ...

    def evaluate(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy)."""
        ...


@runtime_checkable
class BatchedTask(Task, Protocol):
    """A task with batched versions for the simulation (same arithmetic as one at a time)."""

    def train_many(
        self,
        weights: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        hyper: Hyper,
        *,
        seeds: Sequence[int],
    ) -> tuple[list[Weights], np.ndarray]: ...

    def evaluate_matrix(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def evaluate_pairs(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class PriorTask(Task, Protocol):
    """A task whose scores can be prior-shifted: ``evaluate(model, x, y, log_prior=p)``
    counts hits of ``argmax(logits + p)`` (and its loss), ``p = label_log_prior(y_train)``."""

    def label_log_prior(self, y: np.ndarray) -> np.ndarray: ...

    def evaluate(
        self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, log_prior: np.ndarray | None = None
    ) -> tuple[float, float]: ...


@runtime_checkable
class AdaptTask(Task, Protocol):
    """A task with its own budget for adapting a group model to a node's data (its
    personal model): ``adapt_hyper``. Optional: :func:`adaptation_hyper` gives every other
    task a default built on its ``hyper``, and :func:`adapt` runs the task's own ``train``."""

    adapt_hyper: Hyper


ADAPT_EPOCHS = 1  # the default adaptation: one epoch of the task's own training


def adaptation_hyper(task: Task) -> Hyper:
    """The task's ``adapt_hyper`` when it has one, else its ``hyper`` for ``ADAPT_EPOCHS``
    epoch(s) without FedProx's term (fine-tuning: the same ``train``, a smaller budget)."""
    if isinstance(task, AdaptTask):
        return task.adapt_hyper
    return Hyper(ADAPT_EPOCHS, task.hyper.lr, task.hyper.batch_size)


def adapt(task: Task, model: nn.Module, x: np.ndarray, y: np.ndarray, *, seed: int) -> float:
    """Fine-tune ``model`` (a copy of the group model) in place on a node's own (x, y) with
    :func:`adaptation_hyper`, through the task's ``train``; the mean mini-batch loss."""
    return task.train(model, x, y, adaptation_hyper(task), seed=seed)


@runtime_checkable
class ProbaTask(Task, Protocol):
    """A task with its own predictive distribution: ``log_probs(model, x)``, the log class
    probabilities ``(len(x), classes)``. Optional: :func:`log_probs` gives every other task
    ``log_softmax(model(x))``."""

    def log_probs(self, model: nn.Module, x: np.ndarray) -> np.ndarray: ...


def log_probs(task: Task, model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Log class probabilities ``(len(x), classes)`` of ``model`` on features ``x``: the
    task's own ``log_probs`` when it has one, else ``log_softmax`` of ``model(x)`` (a module
    mapping a float32 batch to logits, as every :class:`ImageTask`'s does), float32."""
    if isinstance(task, ProbaTask):
        return np.asarray(task.log_probs(model, x), np.float32)
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.array(x, np.float32)))
        return torch.log_softmax(logits, dim=-1).numpy()


def label_log_prior(y: np.ndarray, num_classes: int) -> np.ndarray:
    """log of the label frequencies of ``y``, Laplace-smoothed (one count added to every
    class): shape ``(num_classes,)``, float32."""
    labels = np.asarray(y, np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


# -- weights of any module --------------------------------------------------------------
def get_weights(model: nn.Module) -> Weights:
    """Copies of the module's ``state_dict`` as numpy arrays, in order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    """Load ``arrays`` (``get_weights`` order) into ``model``; FingerprintError if they do
    not fit its names, shapes and dtypes."""
    import torch

    state = model.state_dict()
    spec_of(model).check(arrays)
    model.load_state_dict(
        {key: torch.as_tensor(np.asarray(a)) for key, a in zip(state, arrays, strict=True)}
    )


def spec_of(model: nn.Module) -> ModelSpec:
    """The model's fingerprint spec: ``state_dict`` names, shapes and numpy dtypes."""
    state = model.state_dict()
    return model_spec(state.keys(), [t.detach().cpu().numpy() for t in state.values()])


def task_spec(task: Task, seed: int = 0) -> ModelSpec:
    """The spec of ``task.create_model(seed)`` (the same for every seed)."""
    return spec_of(task.create_model(seed))


# -- a base class for image-classification tasks --------------------------------------------
class ImageTask:
    """A task on a :class:`mycelium.learning.data.Dataset` of images: the clustered scenarios
    (``rotate``, ``permute``, ``mixed``) and ``.npz`` files come for free. Subclasses set
    ``name``, ``dataset``, ``hyper`` and implement ``create_model``; ``train``/``evaluate``
    are a plain seeded SGD loop on the mean cross-entropy (plus FedProx's term)."""

    name: str
    dataset: Dataset
    hyper: Hyper = Hyper(epochs=2, lr=0.1, batch_size=32)
    scenarios: tuple[str, ...] = data_mod.SCENARIOS

    def create_model(self, seed: int) -> nn.Module:
        raise NotImplementedError

    def load_data(self, request: DataRequest) -> ClientData:
        if request.path is not None:
            return data_mod.load_npz(request.path, seed=request.seed, dataset=self.dataset)
        if request.scenario not in self.scenarios:
            raise ValueError(
                f"task {self.name} has no scenario {request.scenario!r}; "
                f"choose one of {', '.join(self.scenarios)}"
            )
        return data_mod.make_partition(
            scenario=request.scenario,
            clusters=request.clusters,
            index=request.index,
            num_clients=request.num_clients,
            seed=request.seed,
            cluster=request.cluster,
            dataset=self.dataset,
            label_skew=request.label_skew,
        )

    def train(
        self, model: nn.Module, x: np.ndarray, y: np.ndarray, hyper: Hyper, *, seed: int
    ) -> float:
        return sgd_train(model, x, y, hyper, seed=seed)

    def evaluate(
        self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, log_prior: np.ndarray | None = None
    ) -> tuple[float, float]:
        return cross_entropy_eval(model, x, y, log_prior=log_prior)

    def label_log_prior(self, y: np.ndarray) -> np.ndarray:
        return label_log_prior(y, self.dataset.num_classes)


class BatchedImageTask(ImageTask):
    """An :class:`ImageTask` whose ``train``/``evaluate`` on one module are its own batched
    ``train_many``/``evaluate_matrix`` run with a batch of one (so the simulation and a node
    execute the same arithmetic). Subclasses implement the three batched methods."""

    def train(
        self, model: nn.Module, x: np.ndarray, y: np.ndarray, hyper: Hyper, *, seed: int
    ) -> float:
        weights, losses = self.train_many([get_weights(model)], [x], [y], hyper, seeds=[seed])
        set_weights(model, weights[0])
        return float(losses[0])

    def evaluate(
        self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, log_prior: np.ndarray | None = None
    ) -> tuple[float, float]:
        priors = None if log_prior is None else [log_prior]
        loss, accuracy = self.evaluate_matrix([get_weights(model)], [x], [y], log_priors=priors)
        return float(loss[0, 0]), float(accuracy[0, 0])

    def train_many(
        self,
        weights: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        hyper: Hyper,
        *,
        seeds: Sequence[int],
    ) -> tuple[list[Weights], np.ndarray]:
        raise NotImplementedError

    def evaluate_matrix(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def evaluate_pairs(
        self,
        models: Sequence[Weights],
        xs: Sequence[np.ndarray],
        ys: Sequence[np.ndarray],
        *,
        log_priors: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def sgd_train(model: nn.Module, x: np.ndarray, y: np.ndarray, hyper: Hyper, *, seed: int) -> float:
    """Plain SGD on the mean cross-entropy of mini-batches from a permutation seeded per
    epoch by ``seed``; ``proximal_mu`` adds ``mu / 2 * ||w - w_start||^2``. Returns the mean
    mini-batch cross-entropy."""
    import torch
    from torch import nn

    if len(y) < 1:
        raise ValueError("training needs at least one sample")
    xt, yt = torch.from_numpy(np.array(x, np.float32)), torch.from_numpy(np.array(y, np.int64))
    params = [p for p in model.parameters() if p.requires_grad]
    anchors = [p.detach().clone() for p in params]
    rng = np.random.default_rng(seed)
    model.train()
    losses = []
    for _ in range(hyper.epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), hyper.batch_size):
            rows = order[start : start + hyper.batch_size]
            loss = nn.functional.cross_entropy(model(xt[rows]), yt[rows])
            objective = loss
            if hyper.proximal_mu:
                squares = sum(((p - a) ** 2).sum() for p, a in zip(params, anchors, strict=True))
                objective = loss + 0.5 * hyper.proximal_mu * squares
            model.zero_grad(set_to_none=True)
            objective.backward()
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:  # a parameter the loss does not reach: as torch.optim
                        p.sub_(hyper.lr * p.grad)  # in place, as `p -= ...` was
            losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else math.nan


def cross_entropy_eval(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    chunk: int = 4096,
    *,
    log_prior: np.ndarray | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on (x, y); ``log_prior`` (a
    :func:`label_log_prior`) is added to the logits first."""
    import torch
    from torch import nn

    if len(y) < 1:
        raise ValueError("evaluation needs at least one sample")
    model.eval()
    shift = None if log_prior is None else torch.from_numpy(np.asarray(log_prior, np.float32))
    loss_sum, hits = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), chunk):
            xb = torch.from_numpy(np.array(x[start : start + chunk], np.float32))
            yb = torch.from_numpy(np.array(y[start : start + chunk], np.int64))
            logits = model(xb)
            if shift is not None:
                logits = logits + shift
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            hits += int((logits.argmax(dim=1) == yb).sum())
    return loss_sum / len(y), hits / len(y)
