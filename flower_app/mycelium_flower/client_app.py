"""ClientApp of a Mycelium Net group: forwards each TRAIN message to the node's warm trainer.

``node_config["trainer-url"]`` names the node agent's :class:`mycelium.trainer.TrainerServer`
on loopback. When it is empty the ClientApp trains by itself, Flower-quickstart style
(imports torch and loads its partition from ``scenario``/``clusters``/``cluster``/
``partition-index``/``num-partitions``/``seed`` in every message's process): that "cold"
mode exists for the benchmark. Any failure becomes an error reply, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from mycelium.trainer import DEFAULT_FIT_TIMEOUT, FitResult, request_fit
from mycelium_flower.protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    ROUND_KEY,
)

logger = logging.getLogger(__name__)


# node_config keys
TRAINER_URL = "trainer-url"
TRAINER_TIMEOUT = "trainer-timeout"
COLD_KEYS = ("scenario", "clusters", "cluster", "partition-index", "num-partitions", "seed")

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received group model locally; reply with arrays + metrics or an error."""
    try:
        result = _fit(msg, context)
        metrics = MetricRecord({NUM_EXAMPLES_KEY: result.num_examples, **result.metrics})
        content = RecordDict({ARRAYS_KEY: ArrayRecord(result.arrays), METRICS_KEY: metrics})
        return Message(content, reply_to=msg)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
        logger.warning("train failed on node %s: %s", context.node_id, exc)
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)


def _fit(msg: Message, context: Context) -> FitResult:
    content = msg.content
    if ARRAYS_KEY not in content.array_records:
        raise ValueError(f"message carries no {ARRAYS_KEY!r} ArrayRecord")
    arrays = content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    config: dict[str, Any] = dict(content.config_records.get(CONFIG_KEY, ConfigRecord()))
    round_ = config.get(ROUND_KEY)
    round_ = round_ if isinstance(round_, int) else None
    node_config = context.node_config
    url = str(node_config.get(TRAINER_URL, "") or "")
    if url:
        timeout = float(node_config.get(TRAINER_TIMEOUT, DEFAULT_FIT_TIMEOUT))
        return request_fit(
            url, arrays, config, round=round_, flower_node_id=context.node_id, timeout=timeout
        )
    return _fit_cold(arrays, config, node_config, round_, context.node_id)


def _fit_cold(
    arrays: list[Any],
    config: Mapping[str, Any],
    node_config: Mapping[str, Any],
    round_: int | None,
    node_id: int,
) -> FitResult:
    """Quickstart style: import torch, build the partition and train in this process."""
    missing = [k for k in COLD_KEYS if k not in node_config]
    if missing:
        raise ValueError(f"no trainer-url and node_config lacks {', '.join(missing)}")
    from mycelium.learning.data import make_partition
    from mycelium.trainer import LocalTrainer

    cluster = int(node_config["cluster"])
    data = make_partition(
        scenario=str(node_config["scenario"]),
        clusters=int(node_config["clusters"]),
        cluster=cluster if cluster >= 0 else None,
        index=int(node_config["partition-index"]),
        num_clients=int(node_config["num-partitions"]),
        seed=int(node_config["seed"]),
    )
    trainer = LocalTrainer(data, seed=int(node_config["seed"]))
    return trainer.fit(arrays, config, round=round_, flower_node_id=node_id)
