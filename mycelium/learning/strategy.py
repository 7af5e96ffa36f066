"""A group's aggregation strategy: which of flwr's ``flwr.serverapp.strategy`` classes it runs,
with which parameters. No torch. flwr is imported only when a strategy is built.

The arithmetic is flwr's own: :meth:`StrategyConfig.build` returns a ``FedAvg``,
``FedProx``, ``FedAdam``, ``FedYogi`` or ``FedAdagrad`` instance, and :class:`GroupAggregator`
drives one through ``configure_train`` / ``aggregate_train`` exactly as a ServerApp does,
with in-process messages (for the simulation and tests). :class:`TargetGrid` restricts a
real ``Grid`` to the nodes a group chose, so flwr's sampling trains exactly those.

FedProx's clients must add the proximal term: flwr puts ``proximal-mu`` into the train
config, and the task's ``train`` receives it as ``proximal_mu``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mycelium import config

if TYPE_CHECKING:
    from flwr.app import ConfigRecordValues, Message, MetricRecordValues
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Strategy

STRATEGIES = config.STRATEGIES  # fedavg, fedprox, fedadam, fedyogi, fedadagrad
DEFAULT_PROXIMAL_MU = config.PROXIMAL_MU  # flwr's own default 0.0 makes FedProx plain FedAvg
# The record keys flwr's strategies are built with: a TRAIN message's arrays and config, a
# reply's metrics and its FedAvg weight, FedProx's train-config key. Defined here, where the
# strategies are built; mycelium.flower.protocol (which learning may not import) takes them.
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
NUM_EXAMPLES_KEY = "num-examples"
PROXIMAL_MU_KEY = "proximal-mu"
_CLASSES = {
    "fedavg": "FedAvg",
    "fedprox": "FedProx",
    "fedadam": "FedAdam",
    "fedyogi": "FedYogi",
    "fedadagrad": "FedAdagrad",
}
_FEDOPT = ("fedadam", "fedyogi", "fedadagrad")
# Our parameter -> flwr's keyword, and which strategies take it.
_PARAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "proximal_mu": ("proximal_mu", ("fedprox",)),
    "server_lr": ("eta", _FEDOPT),
    "beta_1": ("beta_1", ("fedadam", "fedyogi")),
    "beta_2": ("beta_2", ("fedadam", "fedyogi")),
    "tau": ("tau", _FEDOPT),
}


class StrategyError(ValueError):
    """An unknown strategy or a parameter it does not take / out of range."""


@dataclass(frozen=True)
class StrategyConfig:
    """``name`` plus the parameters given; None = flwr's default (FedProx: 0.01)."""

    name: str = config.STRATEGY
    proximal_mu: float | None = None
    server_lr: float | None = None
    beta_1: float | None = None
    beta_2: float | None = None
    tau: float | None = None

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise StrategyError(
                f"unknown strategy {self.name!r}; choose one of {', '.join(STRATEGIES)}"
            )
        for param, (_, takers) in _PARAMS.items():
            value = getattr(self, param)
            if value is None:
                continue
            flag = "--" + param.replace("_", "-")
            if self.name not in takers:
                raise StrategyError(f"{flag} applies to {', '.join(takers)}, not {self.name}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise StrategyError(f"{flag} must be a number, got {value!r}")
            _check_range(flag, param, float(value))

    @property
    def params(self) -> dict[str, float]:
        """The parameters given explicitly (what the registry stores and lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        return {k: float(v) for k, v in out.items() if v is not None}

    @classmethod
    def from_params(cls, name: str, params: Mapping[str, Any] | None = None) -> StrategyConfig:
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(params or {}) - known)
        if unknown:
            raise StrategyError(f"unknown strategy parameter {unknown[0]!r}")
        return cls(name=name, **dict(params or {}))

    @classmethod
    def of_flwr(cls, strategy: object) -> StrategyConfig:
        """The strategy a built flwr strategy is, read back from the instance: its class
        (the first of flwr's five in its MRO) and every parameter that class takes."""
        by_class = {flwr_name: name for name, flwr_name in _CLASSES.items()}
        name = next(by_class[k.__name__] for k in type(strategy).__mro__ if k.__name__ in by_class)
        return cls(
            name=name,
            **{
                param: float(getattr(strategy, keyword))
                for param, (keyword, takers) in _PARAMS.items()
                if name in takers
            },
        )

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}({extra})" if extra else self.name

    @property
    def flwr_class_name(self) -> str:
        """The class of ``flwr.serverapp.strategy`` this strategy is."""
        return _CLASSES[self.name]

    def flwr_kwargs(self) -> dict[str, float]:
        """The strategy's own keyword arguments for flwr's class (FedProx: mu 0.01 unless
        given)."""
        kwargs: dict[str, float] = {}
        if self.name == "fedprox":
            kwargs["proximal_mu"] = DEFAULT_PROXIMAL_MU
        for param, (keyword, _) in _PARAMS.items():
            value = getattr(self, param)
            if value is not None:
                kwargs[keyword] = float(value)
        return kwargs

    def build(self) -> Strategy:
        """A fresh flwr strategy that trains every node it is offered (one is enough)."""
        from flwr.serverapp import strategy as flwr_strategy

        cls = getattr(flwr_strategy, self.flwr_class_name)
        strategy: Strategy = cls(
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=1,
            weighted_by_key=NUM_EXAMPLES_KEY,
            arrayrecord_key=ARRAYS_KEY,
            configrecord_key=CONFIG_KEY,
            **self.flwr_kwargs(),
        )
        return strategy


def configs_for(names: Sequence[str], **params: float | None) -> list[StrategyConfig]:
    """One config per strategy name, each with the given parameters it takes (a parameter
    that no named strategy takes is a StrategyError: it would silently do nothing)."""
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(_PARAMS))
    if unknown:
        raise StrategyError(f"unknown strategy parameter {unknown[0]!r}")
    for name in names:
        if name not in STRATEGIES:
            raise StrategyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    for param in given:
        takers = _PARAMS[param][1]
        if not any(n in takers for n in names):
            flag = "--" + param.replace("_", "-")
            raise StrategyError(f"{flag} applies to {', '.join(takers)}, none of which was chosen")
    return [
        StrategyConfig(name, **{k: v for k, v in given.items() if name in _PARAMS[k][1]})
        for name in dict.fromkeys(names)
    ]


def _check_range(flag: str, param: str, value: float) -> None:
    if not math.isfinite(value):
        raise StrategyError(f"{flag} must be finite")
    if param in ("beta_1", "beta_2"):
        if not 0.0 <= value < 1.0:
            raise StrategyError(f"{flag} must be in [0, 1), got {value}")
    elif param == "proximal_mu":
        if value < 0.0:
            raise StrategyError(f"{flag} must be >= 0, got {value}")
    elif value <= 0.0:
        raise StrategyError(f"{flag} must be > 0, got {value}")


class TargetGrid:
    """A Grid whose ``get_node_ids`` are only ``targets``; everything else is the real grid's.

    flwr's strategies sample ``fraction_train`` (1.0) of ``get_node_ids()``, so passing this
    view to ``configure_train`` trains exactly the group's chosen targets.
    """

    def __init__(self, grid: Grid | None, targets: Iterable[int]) -> None:
        self._grid = grid
        self._targets = sorted(set(targets))

    def get_node_ids(self) -> list[int]:
        return list(self._targets)

    def __getattr__(self, name: str) -> Any:
        if self._grid is None:
            raise AttributeError(name)
        return getattr(self._grid, name)

    def as_grid(self) -> Grid:
        """This view typed as the Grid it stands for. It is one by delegation, not by
        subclassing: subclassing flwr's Grid would import flwr with this module."""
        return cast("Grid", self)


@dataclass(frozen=True)
class Reply:
    """One member's training result."""

    node_id: int
    arrays: Sequence[np.ndarray]
    num_examples: int
    metrics: Mapping[str, float] | None = None


class GroupAggregator:
    """One group's flwr strategy across rounds, driven with in-process messages.

    ``configure`` and ``aggregate`` are flwr's ``configure_train`` and ``aggregate_train``;
    the round number is the group's own (1, 2, ...), as a group's ServerApp counts it.
    Replies are aggregated in node-id order, so results are deterministic.
    """

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config
        self.strategy = config.build()
        self.server_round = 0
        self._instructions: dict[int, Message] = {}
        self._dtypes: list[np.dtype] = []

    def configure(
        self, arrays: Sequence[np.ndarray], node_ids: Iterable[int]
    ) -> dict[int, dict[str, ConfigRecordValues]]:
        """Start a round from ``arrays``: each node's train config (e.g. ``proximal-mu``)."""
        from flwr.app import ArrayRecord, ConfigRecord

        self.server_round += 1
        self._dtypes = [np.asarray(a).dtype for a in arrays]
        with process_identity(), quiet_flwr():
            messages = self.strategy.configure_train(
                self.server_round,
                ArrayRecord([np.asarray(a) for a in arrays]),
                ConfigRecord({}),
                TargetGrid(None, node_ids).as_grid(),
            )
        self._instructions = {m.metadata.dst_node_id: m for m in messages}
        return {
            nid: dict(m.content.config_records[CONFIG_KEY]) for nid, m in self._instructions.items()
        }

    def aggregate(self, replies: Iterable[Reply]) -> list[np.ndarray] | None:
        """flwr's aggregate of this round's replies, or None when there are none; in the
        dtypes of the arrays the round started from (FedAdam's arithmetic yields float64)."""
        from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

        messages = []
        for reply in sorted(replies, key=lambda r: r.node_id):
            metrics: dict[str, MetricRecordValues] = {
                NUM_EXAMPLES_KEY: int(reply.num_examples),
                **dict(reply.metrics or {}),
            }
            content = RecordDict(
                {
                    ARRAYS_KEY: ArrayRecord([np.asarray(a) for a in reply.arrays]),
                    METRICS_KEY: MetricRecord(metrics),
                }
            )
            messages.append(Message(content, reply_to=self._instructions[reply.node_id]))
        with quiet_flwr():
            arrays, _ = self.strategy.aggregate_train(self.server_round, messages)
        if arrays is None:
            return None
        return [
            a.astype(dtype, copy=False)
            for a, dtype in zip(arrays.to_numpy_ndarrays(), self._dtypes, strict=True)
        ]


@contextlib.contextmanager
def quiet_flwr(level: int = logging.WARNING) -> Iterator[None]:
    """flwr logs an INFO line per configure/aggregate call; hold it to ``level``."""
    flwr_logger = logging.getLogger("flwr")
    previous = flwr_logger.level
    flwr_logger.setLevel(max(previous, level))
    try:
        yield
    finally:
        flwr_logger.setLevel(previous)


@contextlib.contextmanager
def process_identity() -> Iterator[None]:
    """flwr's Messages need the process's run/node/task identity, which a real ServerApp
    process has; outside one (simulation, tests) this plays run 0 on the SuperLink's node."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    try:
        TaskIdentity.run_id  # noqa: B018 - property access raises when unset
    except RuntimeError:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 0, SUPERLINK_NODE_ID, 0
    yield
