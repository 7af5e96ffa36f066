"""The node agent's warm local trainer (the torch side of the warm-trainer bridge).

Flower starts one ClientApp process per message, so importing torch and loading data
there costs seconds every round. Instead the ClientApp posts the group model to the node
agent's :class:`mycelium.flower.trainer_http.TrainerServer`, whose :class:`LocalTrainer`
keeps torch, the data and the models warm.

torch is imported only when a :class:`LocalTrainer` builds its task's models, so
:class:`FitResult` and :class:`FitParams` are usable without it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mycelium import config
from mycelium.flower.protocol import (
    ACCURACY_KEY,
    BATCH_SIZE,
    LOCAL_EPOCHS,
    LOSS_KEY,
    LR,
    POST_ACCURACY_KEY,
    POST_LOSS_KEY,
    PROXIMAL_MU,
    TRAIN_LOSS_KEY,
)
from mycelium.learning.personal import (
    CHOICES,
    ENSEMBLES,
    PersonalModel,
    adaptation_seed,
    check_personal,
    choose,
    choose_ensemble,
    ensemble_members,
    hits,
    local_seed,
    mixture,
    personal_model,
)
from mycelium.learning.tasks.base import Hyper, get_weights, log_probs, set_weights, spec_of
from mycelium.learning.tasks.ops import log_prior_of

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mycelium.learning.data import ClientData
    from mycelium.learning.tasks.base import Task


@dataclass(frozen=True)
class FitResult:
    """What one local fit returns: updated arrays, examples trained on, metrics."""

    arrays: list[np.ndarray]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitParams:
    """Validated hyper-parameters of one fit."""

    epochs: int
    lr: float
    batch_size: int
    proximal_mu: float = 0.0  # FedProx's term, sent by a FedProx group

    @classmethod
    def from_config(cls, config: Mapping[str, Any], defaults: FitParams) -> FitParams:
        """Read ``local-epochs``/``lr``/``batch-size``/``proximal-mu`` from ``config``;
        ValueError if bad."""
        mu = config.get(PROXIMAL_MU, defaults.proximal_mu)
        if isinstance(mu, bool) or not isinstance(mu, int | float) or not 0 <= mu < math.inf:
            raise ValueError(f"{PROXIMAL_MU} must be a finite number >= 0, got {mu!r}")
        epochs = config.get(LOCAL_EPOCHS, defaults.epochs)
        lr = config.get(LR, defaults.lr)
        batch_size = config.get(BATCH_SIZE, defaults.batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs <= 1000:
            raise ValueError(f"{LOCAL_EPOCHS} must be an integer in [0, 1000], got {epochs!r}")
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
            raise ValueError(f"{LR} must be a positive finite number, got {lr!r}")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= 1_000_000
        ):
            raise ValueError(f"{BATCH_SIZE} must be a positive integer, got {batch_size!r}")
        return cls(epochs=epochs, lr=float(lr), batch_size=batch_size, proximal_mu=float(mu))

    def hyper(self) -> Hyper:
        return Hyper(self.epochs, self.lr, self.batch_size, self.proximal_mu)


@dataclass(frozen=True)
class PersonalScores:
    """What the node predicts with for the group model it received at ``fitted_at`` (round
    ``round``): ``predicts_with`` "group", "personal" or "local", whichever of the plain
    group model, its personal model and its own local-only model scored best on the node's
    val split (:func:`mycelium.learning.personal.choose`), or for ``ens`` one of
    :data:`~mycelium.learning.personal.ENSEMBLES` ("group", "group+personal",
    "group+personal+local", :func:`~mycelium.learning.personal.choose_ensemble`);
    ``uses_personal``: not the plain group model. ``personal_val_accuracy`` and
    ``local_val_accuracy`` are None when ``method`` made no such model (``none``);
    ``val_accuracy``/``test_accuracy`` are those of the model the node predicts with, the
    group's are plain."""

    fitted_at: float
    round: int | None
    method: str
    uses_personal: bool
    personal_val_accuracy: float | None
    group_val_accuracy: float
    val_accuracy: float
    test_accuracy: float
    group_test_accuracy: float
    predicts_with: str = "group"
    local_val_accuracy: float | None = None


class LocalTrainer:
    """A node's warm trainer: its data, its own local model and a scratch group model.

    ``task`` (default digits) gives the model, training and evaluation;
    ``epochs``/``lr``/``batch_size`` default to the task's ``hyper``. A group model's score
    on the val split (the current group's in a fit, a candidate's probe) is prior-shifted by
    the node's own training labels when the task has the hook and ``prior_shift`` is on, as
    in the simulation (docs/learning.md); the local model (trained on those labels) and test
    accuracy are scored plain.

    ``personal`` (:mod:`mycelium.learning.personal`): :meth:`personalise` adapts the last
    group model received into the node's personal model and trains the node's own
    local-only model one more round (a copy of the warmed-up local model: the placement's
    local model and score stay those of the warm-up), on a module and lock of its own (fits,
    probes and the fit replies are untouched by it), and keeps the best of the three.

    Thread-safe: one lock serialises fits, probes and warm-up.
    """

    def __init__(
        self,
        data: ClientData,
        *,
        seed: int,
        task: Task | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        clock: Callable[[], float] = time.time,
        prior_shift: bool = True,
        personal: str = config.PERSONAL,
    ) -> None:
        from mycelium.learning.tasks.loader import load_task

        check_personal(personal)

        self._task = task = task if task is not None else load_task(config.TASK)
        self._data = data
        self._seed = seed
        core = FitParams(task.hyper.epochs, task.hyper.lr, task.hyper.batch_size)
        given = {LOCAL_EPOCHS: epochs, LR: lr, BATCH_SIZE: batch_size}
        self._defaults = FitParams.from_config(
            {k: v for k, v in given.items() if v is not None}, core
        )
        self._clock = clock
        self._log_prior = log_prior_of(task, data.y_train) if prior_shift else None
        self._lock = threading.Lock()
        self._local_model = task.create_model(seed)
        self._group_model = task.create_model(seed)
        self.spec = spec_of(self._group_model)
        self.task_name = task.name
        self._warmup_epochs_done = 0
        self._last_round: int | None = None
        self._last_fit_at: float | None = None
        self._group_score: float | None = None
        self._flower_node_id: int | None = None
        self._last_group_arrays: list[np.ndarray] | None = None
        # Personal models: their own scratch module and lock, and a flag set by each fit.
        self.personal_method = personal
        self._personal_model = task.create_model(seed)
        self._personal_lock = threading.Lock()
        self._personal: PersonalScores | None = None
        # the models the node predicts with (the mean of their class probabilities)
        self._predicting: tuple[PersonalModel, ...] | None = None
        self._own_local: list[np.ndarray] | None = None  # its local-only model, for the choice
        self._new_group_model = threading.Event()

    # -- read-only status (updated on each fit) ---------------------------------------
    @property
    def defaults(self) -> FitParams:
        """Hyper-parameters used when a fit config leaves them out (the learning core's
        constants unless given)."""
        return self._defaults

    @property
    def num_examples(self) -> int:
        return int(len(self._data.y_train))

    @property
    def val_size(self) -> int:
        return int(len(self._data.y_val))

    @property
    def last_round(self) -> int | None:
        return self._last_round

    @property
    def last_fit_at(self) -> float | None:
        return self._last_fit_at

    @property
    def group_score(self) -> float | None:
        """Accuracy of the latest group model received, on the node's own val split."""
        return self._group_score

    @property
    def personal(self) -> PersonalScores | None:
        """The personal model's scores for the latest group model :meth:`personalise` saw."""
        return self._personal

    def predicting_models(self) -> tuple[PersonalModel, ...] | None:
        """The models this node predicts with for the latest group model
        :meth:`personalise` saw (None before): one (its personal or local-only model where
        chosen, else the plain group model), or for ``ens`` the group model and the members
        its ensemble added, whose class probabilities it averages."""
        return self._predicting

    @property
    def flower_node_id(self) -> int | None:
        return self._flower_node_id

    @property
    def last_group_arrays(self) -> list[np.ndarray] | None:
        return self._last_group_arrays

    # -- work -------------------------------------------------------------------------
    def check_arrays(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``arrays`` if they fit the task's model fingerprint (names, shapes, dtypes) and
        are finite, else ValueError (a FingerprintError names the first misfit)."""
        out = [np.asarray(a) for a in arrays]
        self.spec.check(out)
        if not all(np.isfinite(a).all() for a in out):
            raise ValueError("model arrays contain NaN or infinity")
        return out

    def fit(
        self,
        arrays: Sequence[np.ndarray],
        config: Mapping[str, Any],
        *,
        round: int | None = None,  # noqa: A002 - the protocol's name
        flower_node_id: int | None = None,
    ) -> FitResult:
        """Score the incoming group model on own val data, then train it locally."""
        params = FitParams.from_config(config, self._defaults)
        incoming = self.check_arrays(arrays)
        task, data, model = self._task, self._data, self._group_model
        with self._lock:
            set_weights(model, incoming)
            val_loss, val_acc = self._evaluate(model, data.x_val, data.y_val)
            seed = self._seed + (round or 0)
            train_loss = task.train(model, data.x_train, data.y_train, params.hyper(), seed=seed)
            post_loss, post_acc = self._evaluate(model, data.x_val, data.y_val)
            updated = get_weights(model)
            self._last_round = round
            self._last_fit_at = self._clock()
            self._group_score = float(val_acc)
            if flower_node_id is not None:
                self._flower_node_id = flower_node_id
            self._last_group_arrays = [a.copy() for a in incoming]
        self._new_group_model.set()
        metrics = {
            ACCURACY_KEY: float(val_acc),
            LOSS_KEY: float(val_loss),
            TRAIN_LOSS_KEY: float(train_loss),
            POST_ACCURACY_KEY: float(post_acc),
            POST_LOSS_KEY: float(post_loss),
        }
        return FitResult(arrays=updated, num_examples=self.num_examples, metrics=metrics)

    def wait_for_group_model(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a fit to bring a group model :meth:`personalise` has
        not seen; True (and the flag cleared) when one came."""
        if self._new_group_model.wait(timeout):
            self._new_group_model.clear()
            return True
        return False

    def personalise(self) -> PersonalScores | None:
        """Adapt the last group model received into the personal model and choose between
        them on the val split, at most once per group model; None when there is no new one.
        Runs on its own module and lock: a fit meanwhile is not held up by it."""
        with self._lock:
            group, fitted_at, rnd = self._last_group_arrays, self._last_fit_at, self._last_round
        if group is None or fitted_at is None:
            return None
        with self._personal_lock:
            if self._personal is not None and self._personal.fitted_at == fitted_at:
                return None
            self._personal, self._predicting = self._personalise(group, fitted_at, rnd)
            scores = self._personal
        logger.debug("personal model of round %s: %s", rnd, scores)
        return scores

    def _personalise(
        self, group: list[np.ndarray], fitted_at: float, rnd: int | None
    ) -> tuple[PersonalScores, tuple[PersonalModel, ...]]:
        data, scratch = self._data, self._personal_model
        seed = adaptation_seed(self._seed, rnd or 0)
        made = personal_model(
            self._task,
            scratch,
            group,
            data.x_train,
            data.y_train,
            method=self.personal_method,
            seed=seed,
        )
        local = None if made is None else self._trained_local(rnd or 0)
        plain = PersonalModel(group)
        if made is not None and self.personal_method == "ens":
            return self._ensemble(plain, made, local, fitted_at, rnd)
        group_val = self._personal_accuracy(plain, data.x_val, data.y_val)
        group_test = self._personal_accuracy(plain, data.x_test, data.y_test)
        own_val = None if made is None else self._personal_accuracy(made, data.x_val, data.y_val)
        local_val = (
            None if local is None else self._personal_accuracy(local, data.x_val, data.y_val)
        )
        picked = int(choose([group_val], [own_val], [local_val])[0])
        used, used_val = [(plain, group_val), (made, own_val), (local, local_val)][picked]
        assert used is not None and used_val is not None  # a missing model is never chosen
        used_test = group_test
        if used is not plain:
            used_test = self._personal_accuracy(used, data.x_test, data.y_test)
        scores = PersonalScores(
            fitted_at=fitted_at,
            round=rnd,
            method=self.personal_method,
            uses_personal=used is not plain,
            personal_val_accuracy=own_val,
            group_val_accuracy=group_val,
            val_accuracy=used_val,
            test_accuracy=used_test,
            group_test_accuracy=group_test,
            predicts_with=CHOICES[picked],
            local_val_accuracy=local_val,
        )
        return scores, (used,)

    def _ensemble(
        self,
        plain: PersonalModel,
        made: PersonalModel,
        local: PersonalModel | None,
        fitted_at: float,
        rnd: int | None,
    ) -> tuple[PersonalScores, tuple[PersonalModel, ...]]:
        """``ens``: the ensemble of the group, personal and local-only models that
        :func:`~mycelium.learning.personal.choose_ensemble` picks on the val split."""
        data = self._data
        models = (plain, made) if local is None else (plain, made, local)
        val = [self._log_probs(m, data.x_val) for m in models]
        members_val = ensemble_members(val[0], val[1], val[2] if local is not None else None)
        picked = choose_ensemble(members_val, data.y_val)
        test = [self._log_probs(m, data.x_test) for m in models[: picked + 1]]  # chosen only
        scores = PersonalScores(
            fitted_at=fitted_at,
            round=rnd,
            method=self.personal_method,
            uses_personal=picked > 0,
            personal_val_accuracy=hits(val[1], data.y_val),
            group_val_accuracy=hits(val[0], data.y_val),
            val_accuracy=hits(members_val[picked], data.y_val),
            test_accuracy=hits(test[0] if picked == 0 else mixture(test), data.y_test),
            group_test_accuracy=hits(test[0], data.y_test),
            predicts_with=ENSEMBLES[picked],
            local_val_accuracy=None if local is None else hits(val[2], data.y_val),
        )
        return scores, models[: picked + 1]

    def _log_probs(self, model: PersonalModel, x: np.ndarray) -> np.ndarray:
        """Log class probabilities of ``model`` on ``x`` on the personal scratch module (its
        lock held)."""
        set_weights(self._personal_model, model.weights)
        return log_probs(self._task, self._personal_model, x)

    def _trained_local(self, rnd: int) -> PersonalModel:
        """The node's local-only model trained one more round (from the warmed-up local
        model the first time) on the personal scratch module (its lock held)."""
        if self._own_local is None:
            self._own_local = self.local_arrays()
        set_weights(self._personal_model, self._own_local)
        hyper = self._defaults.hyper()
        data = self._data
        seed = local_seed(self._seed, rnd)
        self._task.train(self._personal_model, data.x_train, data.y_train, hyper, seed=seed)
        self._own_local = get_weights(self._personal_model)
        return PersonalModel(self._own_local)

    def _personal_accuracy(self, model: PersonalModel, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of ``model`` on (x, y) on the personal scratch module (its lock held)."""
        set_weights(self._personal_model, model.weights)
        if model.log_prior is None:
            return float(self._task.evaluate(self._personal_model, x, y)[1])
        shifted = self._task.evaluate(self._personal_model, x, y, log_prior=model.log_prior)  # type: ignore[call-arg]
        return float(shifted[1])

    def evaluate_arrays(self, arrays: Sequence[np.ndarray]) -> tuple[float, float]:
        """(loss, accuracy) of a model (e.g. a candidate group's) on own val split
        (prior-shifted, see the class)."""
        return self._score(arrays, self._data.x_val, self._data.y_val, shifted=True)

    def test_accuracy(self, arrays: Sequence[np.ndarray]) -> float:
        """Accuracy of a model on the node's own test split (for status reports)."""
        return self._score(arrays, self._data.x_test, self._data.y_test, shifted=False)[1]

    def _score(
        self, arrays: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, *, shifted: bool
    ) -> tuple[float, float]:
        checked = self.check_arrays(arrays)
        with self._lock:  # the scratch group model is shared with fits
            set_weights(self._group_model, checked)
            loss, acc = self._evaluate(self._group_model, x, y, shifted=shifted)
        return float(loss), float(acc)

    def _evaluate(
        self, model: Any, x: np.ndarray, y: np.ndarray, *, shifted: bool = True
    ) -> tuple[float, float]:
        """The task's (loss, accuracy), ``shifted`` by the node's label log-prior if it has
        one (group models; the local model and test splits are scored plain)."""
        if not shifted or self._log_prior is None:
            return self._task.evaluate(model, x, y)
        return self._task.evaluate(model, x, y, log_prior=self._log_prior)  # type: ignore[call-arg]

    def warm_up(self, epochs: int) -> float:
        """Train the node's own local-only model for ``epochs``; returns the mean loss."""
        with self._lock:
            hyper = Hyper(epochs, self._defaults.lr, self._defaults.batch_size)
            seed = self._seed + self._warmup_epochs_done
            loss = self._task.train(
                self._local_model, self._data.x_train, self._data.y_train, hyper, seed=seed
            )
            self._warmup_epochs_done += epochs
        return float(loss)

    def local_score(self) -> float:
        """Accuracy of the node's own local-only model on its val split."""
        with self._lock:
            _, acc = self._task.evaluate(self._local_model, self._data.x_val, self._data.y_val)
        return float(acc)

    def local_arrays(self) -> list[np.ndarray]:
        """The local-only model's arrays (e.g. to seed a group this node founds)."""
        with self._lock:
            return get_weights(self._local_model)
