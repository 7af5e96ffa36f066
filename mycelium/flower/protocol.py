"""Every value that crosses a process boundary of a group, defined once, with its codec.

Four boundaries, each one typed model with one encode/decode pair:

- the run config (``flwr run --run-config`` -> ServerApp): :class:`RunConfig`, whose
  defaults ``flower_app/pyproject.toml`` repeats (that file cannot import; a test keeps
  them equal);
- the node config (``flower-supernode --node-config`` -> ClientApp): :class:`SuperNodeConfig`;
- the warm trainer's HTTP metadata (ClientApp -> node agent, loopback): :class:`FitMeta`
  (request header) and :class:`FitReplyMeta` (reply headers);
- the TRAIN message and its reply (ServerApp <-> ClientApp): the record keys below (flwr's
  strategies are built with them in :mod:`mycelium.learning.strategy`) and the fit
  hyper-parameters (:class:`mycelium.flower.trainer.FitParams` reads them).

Plus what we read from Flower's own processes, and :func:`format_config`, which renders a
config for Flower's ``key=value`` parser. A key of a run or node config is its field's name
with hyphens. Flower's configs have no null: an optional number that is not set travels as
:data:`UNSET`.

Torch- and flwr-free: every process imports it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_type_hints

from mycelium import config
from mycelium.learning.strategy import ARRAYS_KEY as ARRAYS_KEY
from mycelium.learning.strategy import CONFIG_KEY as CONFIG_KEY
from mycelium.learning.strategy import METRICS_KEY as METRICS_KEY
from mycelium.learning.strategy import NUM_EXAMPLES_KEY as NUM_EXAMPLES_KEY
from mycelium.learning.strategy import PROXIMAL_MU_KEY, StrategyConfig

# -- TRAIN message and reply records ------------------------------------------------------
# ARRAYS_KEY: ArrayRecord, the model in get_weights order; CONFIG_KEY: ConfigRecord with
# ROUND_KEY and the fit hyper-parameters below; METRICS_KEY: the reply's MetricRecord, with
# NUM_EXAMPLES_KEY, the FedAvg weight.
ROUND_KEY = "server-round"
# Reply metrics (the trainer's FitResult.metrics).
ACCURACY_KEY = "val_accuracy"  # incoming group model on the member's own val split
LOSS_KEY = "val_loss"
TRAIN_LOSS_KEY = "train_loss"
POST_ACCURACY_KEY = "post_val_accuracy"  # after local training
POST_LOSS_KEY = "post_val_loss"
# Aggregated round metrics added by the strategy (not sent by members).
NUM_NODES_KEY = "num-nodes"


def metric_number(value: int | float | list[int] | list[float]) -> float:
    """A reply's metric (a value of a flwr ``MetricRecord``) as one number; TypeError when
    it is a list, as ``float(value)`` raises for one."""
    if isinstance(value, list):
        raise TypeError(f"a metric must be a number, not a list of {len(value)}")
    return float(value)


# -- fit hyper-parameters (a round's train config; the group sets them in its run config) ---
LOCAL_EPOCHS = "local-epochs"
LR = "lr"
BATCH_SIZE = "batch-size"
PROXIMAL_MU = PROXIMAL_MU_KEY  # FedProx's, put into the train config by flwr's FedProx

ConfigValue = str | int | float | bool
UNSET = -1  # an optional number that is not set (-1.0 for a float)


class ConfigError(ValueError):
    """A run or node config value of the wrong type, or a missing one."""


# -- run config (ServerApp) -----------------------------------------------------------------
STRATEGY = "strategy"  # the key of RunConfig.strategy's name; its parameters have their own


@dataclass(frozen=True)
class RunConfig:
    """The run config of a group, typed (see the module docstring for the encoding).

    The group's host sets the four registry fields and the group id when it starts the run.
    """

    # The registry URLs, comma-separated (str(RegistryEndpoints)): a run config holds
    # strings; the ServerApp parses them once (open_registry). Empty = no registry.
    registry_url: str = ""
    registry_ca: str = ""  # CA file (PEM) of an https registry on the host; empty = system
    group_id: int = 0
    # A path on the host, never the token: every SuperNode can read the run config.
    group_token_file: str = ""
    # Fit hyper-parameters sent with each round; None = the member's (its task's) default.
    local_epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    num_rounds: int = 0  # 0 = run until stopped
    min_round_timeout: float = config.MIN_ROUND_TIMEOUT_S  # lower bound of the adaptive one
    first_round_timeout: float = 120.0  # before any round time was observed
    timeout_factor: float = 3.0  # timeout = max(min, factor x median of recent rounds)
    idle_poll: float = 1.0  # wait between checks when the group has no trainable member
    unclaimed_grace: float = 30.0  # seconds an online id no member claimed still gets work
    registry_timeout: float = config.REGISTRY_TIMEOUT_S  # each registry HTTP call
    reply_poll: float = 0.25  # seconds between pulls of replies (Flower's own loop: 3 s)
    strategy: StrategyConfig = StrategyConfig()  # flwr's class and the parameters given
    initial_model: str = ""  # absolute path of an npz to start from when the registry has none

    def to_run_config(self) -> dict[str, ConfigValue]:
        """What ``flwr run --run-config`` carries (render it with :func:`format_config`)."""
        values = _encode(self, skip={STRATEGY})
        values[STRATEGY] = self.strategy.name
        values.update(_encode(self.strategy, skip={"name"}))
        return values

    @classmethod
    def from_run_config(cls, values: Mapping[str, Any]) -> RunConfig:
        """The typed run config; a key not given keeps its default. :class:`ConfigError`
        for a value of the wrong type, StrategyError (a ValueError) for a bad strategy."""
        kwargs = _decode(cls, values, skip={STRATEGY})
        default = StrategyConfig()
        params = _decode(StrategyConfig, values, skip={"name"})
        name = _decode_value(str, values.get(STRATEGY, default.name), STRATEGY)
        return cls(**kwargs, strategy=StrategyConfig(name, **params))


# -- node config (ClientApp) ----------------------------------------------------------------
FIT_TIMEOUT_S = 120.0  # the ClientApp's wait for its trainer's reply


@dataclass(frozen=True)
class ColdData:
    """What a "cold" ClientApp (quickstart style, for the benchmark) loads itself: client
    ``index`` of ``num_clients`` of a scenario of ``task`` (the fields of its
    ``mycelium.learning.tasks.base.DataRequest``, which this module cannot import)."""

    scenario: str
    clusters: int
    index: int
    num_clients: int
    seed: int
    cluster: int | None = None  # None: by index
    task: str = config.TASK  # a task reference (docs/tasks.md)


@dataclass(frozen=True)
class SuperNodeConfig:
    """The node config of a member's SuperNode: its agent's warm trainer, or cold data."""

    trainer_url: str = ""  # the node agent's TrainerServer; empty = "cold" mode
    trainer_timeout: float = FIT_TIMEOUT_S
    cold: ColdData | None = None

    def to_node_config(self) -> dict[str, ConfigValue]:
        """What ``--node-config`` carries (render it with :func:`format_config`)."""
        values = _encode(self, skip={"cold"})
        if self.cold is not None:
            values.update(_encode(self.cold))
        return values

    @classmethod
    def from_node_config(cls, values: Mapping[str, Any]) -> SuperNodeConfig:
        """The typed node config: cold data when any of its keys is given (then every
        required one must be: :class:`ConfigError`)."""
        cold_keys = {_key(f.name) for f in fields(ColdData)}
        cold = _decode(ColdData, values) if cold_keys & set(values) else None
        return cls(
            **_decode(cls, values, skip={"cold"}),
            cold=None if cold is None else ColdData(**cold),
        )


# -- the warm trainer's HTTP endpoint (ClientApp -> node agent, loopback) -------------------
FIT_PATH = "/fit"  # POST: body npz arrays, header META_HEADER; reply npz + FitReplyMeta's
HEALTH_PATH = "/health"
META_HEADER = "X-Fit-Meta"
NUM_EXAMPLES_HEADER = "X-Num-Examples"
METRICS_HEADER = "X-Metrics"  # JSON object of floats


@dataclass(frozen=True)
class FitMeta:
    """The metadata of one ``POST /fit``: JSON ``{"round", "flower_node_id", "config"}`` in
    :data:`META_HEADER` (``config``: the TRAIN message's train config)."""

    round: int | None = None
    flower_node_id: int | None = None
    config: Mapping[str, ConfigValue] = field(default_factory=dict)

    def to_header(self) -> str:
        return json.dumps(
            {
                "round": self.round,
                "flower_node_id": self.flower_node_id,
                "config": dict(self.config),
            }
        )

    @classmethod
    def from_header(cls, raw: str | None) -> FitMeta:
        """The request's metadata (none: all defaults); ValueError with the reason."""
        if not raw:
            return cls()
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{META_HEADER} is not JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{META_HEADER} must be a JSON object")
        for name in ("round", "flower_node_id"):
            value = meta.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer or null")
        fit_config = meta.get("config") or {}
        if not isinstance(fit_config, dict):
            raise ValueError("config must be a JSON object")
        return cls(meta.get("round"), meta.get("flower_node_id"), fit_config)


@dataclass(frozen=True)
class FitReplyMeta:
    """The metadata of a ``/fit`` reply: examples trained on and the fit's metrics."""

    num_examples: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_headers(self) -> dict[str, str]:
        return {
            NUM_EXAMPLES_HEADER: str(self.num_examples),
            METRICS_HEADER: json.dumps(dict(self.metrics)),
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> FitReplyMeta:
        """ValueError for headers that are not an integer and a JSON object of numbers."""
        named = {name.lower(): value for name, value in headers.items()}  # HTTP: any case
        num_examples = int(named.get(NUM_EXAMPLES_HEADER.lower(), "0"))
        metrics = json.loads(named.get(METRICS_HEADER.lower(), "{}"))
        if not isinstance(metrics, dict):
            raise ValueError(f"{METRICS_HEADER} must be a JSON object")
        return cls(num_examples, {str(k): float(v) for k, v in metrics.items()})


# -- what we read from Flower's own processes ---------------------------------------------
NODE_ID_PATTERN = re.compile(r"SuperNode ID: (\d+)")  # flower-supernode's log
RUN_ID_KEY = "run-id"  # `flwr run --format json` output
CONNECTION = "group"  # our one connection name in $FLWR_HOME/config.toml

# -- rendering configs for Flower ---------------------------------------------------------
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


def format_config(config: Mapping[str, ConfigValue]) -> str:
    """Render ``config`` for ``--node-config`` or ``flwr run --run-config`` so that Flower
    parses back the same typed values.

    Flower splits on ``key=value`` with values ``'...'``, ``"..."`` or bare tokens and
    reads them as TOML: strings go in single quotes (TOML literal strings, no escapes), or
    double quotes if they contain a single quote. ValueError for what cannot round-trip.
    """
    parts = []
    for key, value in config.items():
        if not _KEY_PATTERN.match(key):
            raise ValueError(f"node-config key {key!r} must match [A-Za-z0-9_-]+")
        parts.append(f"{key}={_format_value(key, value)}")
    return " ".join(parts)


def _format_value(key: str, value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"node-config {key}: {value} is not finite")
        return repr(value)
    if isinstance(value, str):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"node-config {key}: control characters are not allowed")
        if "'" not in value:
            return f"'{value}'"
        if '"' not in value and "\\" not in value:
            return f'"{value}"'
        raise ValueError(f"node-config {key}: cannot quote a value with both quote kinds")
    raise ValueError(f"node-config {key}: unsupported type {type(value).__name__}")


# -- the codec of run and node configs -------------------------------------------------------
def _key(name: str) -> str:
    return name.replace("_", "-")


def _scalars(cls: type) -> dict[str, tuple[type, bool]]:
    """Each field of ``cls``: (its scalar type, whether it may be None)."""
    out: dict[str, tuple[type, bool]] = {}
    for name, hint in get_type_hints(cls).items():
        args = [a for a in getattr(hint, "__args__", (hint,)) if a is not type(None)]
        out[name] = (args[0], len(args) < len(getattr(hint, "__args__", (hint,))))
    return out


def _encode(obj: Any, *, skip: frozenset[str] | set[str] = frozenset()) -> dict[str, ConfigValue]:
    """``obj``'s scalar fields by key; None as UNSET of the field's type."""
    types = _scalars(type(obj))
    out: dict[str, ConfigValue] = {}
    for f in fields(obj):
        if f.name not in skip:
            value = getattr(obj, f.name)
            out[_key(f.name)] = types[f.name][0](UNSET) if value is None else value
    return out


def _decode(
    cls: type, values: Mapping[str, Any], *, skip: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """Keyword arguments of ``cls`` from the keys given; ConfigError for a required field
    without its key or a value of the wrong type."""
    types = _scalars(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = _key(f.name)
        if f.name in skip:
            continue
        if key not in values:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"config lacks {key}")
            continue
        kind, optional = types[f.name]
        value = _decode_value(kind, values[key], key)
        kwargs[f.name] = None if optional and kind is not str and value < 0 else value
    return kwargs


def _decode_value(kind: type, value: Any, key: str) -> Any:
    """``value`` as ``kind`` (str, int or float; an int is a float too)."""
    accepted: tuple[type, ...] = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ConfigError(f"config {key} must be {kind.__name__}, got {value!r}")
    return kind(value)
