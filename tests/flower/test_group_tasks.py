"""A real MNIST group with FedProx: the registry lists its task, fingerprint and strategy,
members train the CNN through flwr's FedProx, and a model that does not fit is refused.
Slow: real registry and Flower processes."""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from mycelium.client import RegistryError
from mycelium.flower.group_host import GroupHost
from mycelium.flower.protocol import SuperNodeConfig
from mycelium.flower.supernode import SuperNode
from mycelium.flower.trainer import LocalTrainer
from mycelium.flower.trainer_http import TrainerServer
from mycelium.learning.codec import bytes_to_weights, weights_to_bytes
from mycelium.learning.strategy import StrategyConfig
from mycelium.learning.tasks.base import DataRequest, get_weights, task_spec
from mycelium.learning.tasks.loader import load_task
from tests.conftest import OPERATOR_TOKEN, register_node
from tests.flower.test_group import RUN_CONFIG, Member, registry, wait_round

__all__ = ["registry"]  # the fixture: a registry, and heartbeats for the members added

pytestmark = pytest.mark.slow

PROX = StrategyConfig("fedprox", proximal_mu=0.05)


def test_an_mnist_fedprox_group_trains_and_refuses_other_models(
    registry: tuple[str, list[Member], ExitStack], tmp_path: Path
) -> None:
    mnist = load_task("mnist")
    spec = task_spec(mnist)
    url, members, stack = registry
    host = GroupHost(
        url,
        name="mnist-prox",
        task="mnist",
        work_dir=tmp_path / "group",
        run_config=dataclasses.replace(RUN_CONFIG, strategy=PROX),
        heartbeat_interval=1.0,
        creator_token=OPERATOR_TOKEN,
    )
    stack.callback(host.stop)
    creds = host.start()
    for index in range(2):
        data = mnist.load_data(DataRequest("rotate", 2, index=index, num_clients=4))
        trainer = LocalTrainer(data, seed=index, task=mnist)
        server = TrainerServer(trainer)
        stack.callback(server.stop)
        node = register_node(url, name=f"n{index}", task="mnist", num_samples=256)
        stack.callback(node.client.close)
        supernode = SuperNode(
            superlink_address=host.fleet_address,
            node_config=SuperNodeConfig(trainer_url=server.start()),
            work_dir=tmp_path / f"n{index}",
            name=f"n{index}",
        ).start()
        stack.callback(supernode.stop)
        member = Member(f"n{index}", node.client, node.node_id, trainer, server, supernode)
        member.beating.set()
        members.append(member)  # heartbeats from the fixture's thread
        fid = supernode.wait_connected(timeout=90)
        node.client.join_group(creds.group_id, node.node_id, flower_node_id=fid)
        member.group_id = creds.group_id
    client = node.client
    listed = client.list_groups(task="mnist", fingerprint=spec.fingerprint)
    assert [g.group_id for g in listed] == [creds.group_id]
    assert (listed[0].strategy, listed[0].strategy_params) == (
        "fedprox",
        {"proximal_mu": 0.05},
    )
    assert client.list_groups(fingerprint=task_spec(load_task("digits")).fingerprint) == []
    group = wait_round(client, creds.group_id, 2, timeout=240)
    assert group.rounds[-1].num_nodes == 2
    # The ServerApp's flwr FedProx holds the mu given here (read back from its instance).
    assert f"strategy {PROX.describe()}" in host.run_log()
    model = bytes_to_weights(client.get_model(creds.group_id))
    spec.check(model)  # the FedProx aggregate still fits the CNN's fingerprint
    assert not np.array_equal(model[0], get_weights(mnist.create_model(0))[0])
    digits_model = weights_to_bytes(get_weights(load_task("digits").create_model(0)))
    owner = client.__class__(url, token=creds.group_token)
    stack.callback(owner.close)
    with pytest.raises(RegistryError, match="does not fit the group's fingerprint"):
        owner.put_model(creds.group_id, digits_model)
