"""What a member's ClientApp does with a TRAIN message.

``node_config["trainer-url"]`` set: forward the arrays to the node agent's warm trainer
(:func:`mycelium.flower.trainer_http.request_fit`). Empty: "cold" mode, Flower-quickstart
style, for the benchmark: import torch and build the partition from the node config in this
process, every message. torch is imported only in cold mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from mycelium.flower import protocol as p
from mycelium.flower.trainer import FitResult
from mycelium.flower.trainer_http import DEFAULT_FIT_TIMEOUT, request_fit


def fit_message(msg: Message, context: Context) -> FitResult:
    """Train the message's group model on this node's data; ValueError/FitError if not."""
    content = msg.content
    if p.ARRAYS_KEY not in content.array_records:
        raise ValueError(f"message carries no {p.ARRAYS_KEY!r} ArrayRecord")
    arrays = content.array_records[p.ARRAYS_KEY].to_numpy_ndarrays()
    config: dict[str, Any] = dict(content.config_records.get(p.CONFIG_KEY, ConfigRecord()))
    round_ = config.get(p.ROUND_KEY)
    round_ = round_ if isinstance(round_, int) else None
    node_config = context.node_config
    url = str(node_config.get(p.TRAINER_URL, "") or "")
    if url:
        timeout = float(node_config.get(p.TRAINER_TIMEOUT, DEFAULT_FIT_TIMEOUT))
        return request_fit(
            url, arrays, config, round=round_, flower_node_id=context.node_id, timeout=timeout
        )
    return _fit_cold(arrays, config, node_config, round_, context.node_id)


def reply_content(result: FitResult) -> RecordDict:
    """The TRAIN reply: the updated arrays and the metrics with the FedAvg weight."""
    metrics = MetricRecord({p.NUM_EXAMPLES_KEY: result.num_examples, **result.metrics})
    return RecordDict({p.ARRAYS_KEY: ArrayRecord(result.arrays), p.METRICS_KEY: metrics})


def _fit_cold(
    arrays: list[Any],
    config: Mapping[str, Any],
    node_config: Mapping[str, Any],
    round_: int | None,
    node_id: int,
) -> FitResult:
    """Quickstart style: import torch, build the partition and train in this process."""
    missing = [k for k in p.COLD_KEYS if k not in node_config]
    if missing:
        raise ValueError(f"no {p.TRAINER_URL} and node_config lacks {', '.join(missing)}")
    from mycelium.flower.trainer import LocalTrainer
    from mycelium.learning.tasks.base import DataRequest
    from mycelium.learning.tasks.loader import load_task

    task = load_task(str(node_config.get(p.TASK, "digits")))
    cluster = int(node_config[p.CLUSTER])
    data = task.load_data(
        DataRequest(
            scenario=str(node_config[p.SCENARIO]),
            clusters=int(node_config[p.CLUSTERS]),
            cluster=cluster if cluster >= 0 else None,
            index=int(node_config[p.PARTITION_INDEX]),
            num_clients=int(node_config[p.NUM_PARTITIONS]),
            seed=int(node_config[p.SEED]),
        )
    )
    trainer = LocalTrainer(data, seed=int(node_config[p.SEED]), task=task)
    return trainer.fit(arrays, config, round=round_, flower_node_id=node_id)
