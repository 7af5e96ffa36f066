"""Every name that crosses a process boundary of a group, defined once.

Four boundaries: the TRAIN message and its reply (ServerApp <-> ClientApp), the run config
(``flwr run --run-config`` -> ServerApp; defaults in ``flower_app/pyproject.toml``), the
node config (``flower-supernode --node-config`` -> ClientApp) and the warm trainer's HTTP
endpoint (ClientApp -> node agent). Plus what we read from Flower's own processes, and
:func:`format_config`, which renders a config for Flower's ``key=value`` parser.

Torch- and flwr-free: every process imports it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

# -- TRAIN message and reply records ------------------------------------------------------
ARRAYS_KEY = "arrays"  # ArrayRecord: the model, in mycelium.learning.model's get_weights order
CONFIG_KEY = "config"  # ConfigRecord: ROUND_KEY and the fit hyper-parameters below
METRICS_KEY = "metrics"  # MetricRecord of the reply
NUM_EXAMPLES_KEY = "num-examples"  # FedAvg weight
ROUND_KEY = "server-round"
# Reply metrics (the trainer's FitResult.metrics).
ACCURACY_KEY = "val_accuracy"  # incoming group model on the member's own val split
LOSS_KEY = "val_loss"
TRAIN_LOSS_KEY = "train_loss"
POST_ACCURACY_KEY = "post_val_accuracy"  # after local training
POST_LOSS_KEY = "post_val_loss"
# Aggregated round metrics added by the strategy (not sent by members).
NUM_NODES_KEY = "num-nodes"

# -- fit hyper-parameters (run config of the group, fit config of a round) ------------------
LOCAL_EPOCHS = "local-epochs"
LR = "lr"
BATCH_SIZE = "batch-size"

# -- run config (ServerApp; defaults in flower_app/pyproject.toml) --------------------------
REGISTRY_URL = "registry-url"
REGISTRY_CA = "registry-ca"  # absolute path of the CA file on the group's host; "" = system
GROUP_ID = "group-id"
# A path on the host, never the token: every SuperNode can read the run config.
GROUP_TOKEN_FILE = "group-token-file"
NUM_ROUNDS = "num-rounds"
MIN_ROUND_TIMEOUT = "min-round-timeout"
FIRST_ROUND_TIMEOUT = "first-round-timeout"
TIMEOUT_FACTOR = "timeout-factor"
IDLE_POLL = "idle-poll"
UNCLAIMED_GRACE = "unclaimed-grace"
REGISTRY_TIMEOUT = "registry-timeout"
REPLY_POLL = "reply-poll"
STRATEGY = "strategy"  # fedavg | fedprox | fedadam | fedyogi | fedadagrad (flwr's classes)
PROXIMAL_MU = "proximal-mu"  # also FedProx's train-config key; < 0 in the run config: default
SERVER_LR = "server-lr"  # FedOpt's eta; < 0: flwr's default
TAU = "tau"
INITIAL_MODEL = "initial-model"  # npz path of the starting arrays when the registry has none

# -- node config (ClientApp) ----------------------------------------------------------------
TRAINER_URL = "trainer-url"  # the node agent's TrainerServer; empty = "cold" mode
TRAINER_TIMEOUT = "trainer-timeout"
# Cold mode (quickstart style, for the benchmark): the ClientApp builds its partition.
SCENARIO = "scenario"
CLUSTERS = "clusters"
CLUSTER = "cluster"  # -1 = by partition index
PARTITION_INDEX = "partition-index"
NUM_PARTITIONS = "num-partitions"
SEED = "seed"
TASK = "task"  # optional task reference of a cold ClientApp (default digits)
COLD_KEYS = (SCENARIO, CLUSTERS, CLUSTER, PARTITION_INDEX, NUM_PARTITIONS, SEED)

# -- the warm trainer's HTTP endpoint (ClientApp -> node agent, loopback) -------------------
FIT_PATH = "/fit"  # POST: body npz arrays; reply npz + the two headers below
HEALTH_PATH = "/health"
META_HEADER = "X-Fit-Meta"  # JSON {META_ROUND: int|null, META_NODE_ID: int|null, META_CONFIG: {}}
NUM_EXAMPLES_HEADER = "X-Num-Examples"
METRICS_HEADER = "X-Metrics"  # JSON object of floats
META_ROUND = "round"
META_NODE_ID = "flower_node_id"
META_CONFIG = "config"

# -- what we read from Flower's own processes ---------------------------------------------
NODE_ID_PATTERN = re.compile(r"SuperNode ID: (\d+)")  # flower-supernode's log
RUN_ID_KEY = "run-id"  # `flwr run --format json` output
SERVERAPP_PROCESS = "flwr-serverapp"  # command name of a run's ServerApp process
CONNECTION = "group"  # our one connection name in $FLWR_HOME/config.toml

# -- rendering configs for Flower ---------------------------------------------------------
ConfigValue = str | int | float | bool
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
