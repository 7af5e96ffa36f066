"""What a member's ClientApp does with a TRAIN message.

Its node config (:class:`~mycelium.flower.protocol.SuperNodeConfig`) has a trainer URL:
forward the arrays to the node agent's warm trainer
(:func:`mycelium.flower.trainer_http.request_fit`). None: "cold" mode, Flower-quickstart
style, for the benchmark: import torch and build the partition from the node config in this
process, every message. torch is imported only in cold mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from mycelium.flower import protocol as p
from mycelium.flower.trainer import FitResult
from mycelium.flower.trainer_http import request_fit


def fit_message(msg: Message, context: Context) -> FitResult:
    """Train the message's group model on this node's data; ValueError/FitError if not."""
    content = msg.content
    if p.ARRAYS_KEY not in content.array_records:
        raise ValueError(f"message carries no {p.ARRAYS_KEY!r} ArrayRecord")
    arrays = content.array_records[p.ARRAYS_KEY].to_numpy_ndarrays()
    config: dict[str, Any] = dict(content.config_records.get(p.CONFIG_KEY, ConfigRecord()))
    round_ = config.get(p.ROUND_KEY)
    meta = p.FitMeta(round_ if isinstance(round_, int) else None, context.node_id, config)
    node = p.SuperNodeConfig.from_node_config(context.node_config)
    if node.trainer_url:
        return request_fit(node.trainer_url, arrays, meta, timeout=node.trainer_timeout)
    if node.cold is None:
        raise ValueError("the node config has neither a trainer-url nor cold data")
    return _fit_cold(arrays, meta, node.cold)


def reply_content(result: FitResult) -> RecordDict:
    """The TRAIN reply: the updated arrays and the metrics with the FedAvg weight."""
    metrics = MetricRecord({p.NUM_EXAMPLES_KEY: result.num_examples, **result.metrics})
    return RecordDict({p.ARRAYS_KEY: ArrayRecord(result.arrays), p.METRICS_KEY: metrics})


def _fit_cold(arrays: list[Any], meta: p.FitMeta, cold: p.ColdData) -> FitResult:
    """Quickstart style: import torch, build the partition and train in this process."""
    from mycelium.flower.trainer import LocalTrainer
    from mycelium.learning.tasks.base import DataRequest
    from mycelium.learning.tasks.loader import load_task

    request = dataclasses.asdict(cold)
    task = load_task(request.pop("task"))
    data = task.load_data(DataRequest(**request))
    trainer = LocalTrainer(data, seed=cold.seed, task=task)
    return trainer.fit(arrays, meta.config, round=meta.round, flower_node_id=meta.flower_node_id)
