"""A real group: registry process + GroupHost (superlink + flwr run) + SuperNodes whose
ClientApps forward to in-process TrainerServers. Slow: real Flower processes."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mycelium.api import GroupDetail
from mycelium.client import RegistryClient, RegistryError
from mycelium.flower.group_host import GroupHost
from mycelium.flower.protocol import RunConfig, SuperNodeConfig
from mycelium.flower.supernode import SuperNode
from mycelium.flower.trainer import LocalTrainer
from mycelium.flower.trainer_http import TrainerServer
from mycelium.learning import model as model_lib
from mycelium.learning.codec import weights_to_bytes
from mycelium.learning.data import make_partition
from mycelium.procs import wait_for
from tests.conftest import OPERATOR_TOKEN, register_node, sha256_hex, start_registry

pytestmark = pytest.mark.slow

NODE_TTL = 3.0
HEARTBEAT_EVERY = 0.5
RUN_CONFIG = RunConfig(
    min_round_timeout=15.0,
    first_round_timeout=60.0,
    unclaimed_grace=0.0,  # strangers never train: only registry members with their id
    idle_poll=0.3,
)


@dataclass
class Member:
    """A node as the agent would run it: registry entry, warm trainer, SuperNode."""

    name: str
    client: RegistryClient
    node_id: int
    trainer: LocalTrainer
    server: TrainerServer
    supernode: SuperNode
    group_id: int | None = None
    beating: threading.Event = field(default_factory=threading.Event)

    def beat(self) -> None:
        if self.beating.is_set():
            try:
                self.client.heartbeat(
                    self.node_id,
                    group_id=self.group_id,
                    num_samples=self.trainer.num_examples,
                    flower_node_id=self.supernode.flower_node_id,
                )
            except RegistryError:
                pass


def start_member(
    stack: ExitStack, url: str, fleet: str, work: Path, name: str, index: int
) -> Member:
    data = make_partition(scenario="rotate", clusters=2, index=index, num_clients=6, seed=0)
    trainer = LocalTrainer(data, seed=index)
    server = TrainerServer(trainer)
    trainer_url = server.start()
    stack.callback(server.stop)
    node = register_node(url, name=name, num_samples=len(data.y_train))
    stack.callback(node.client.close)
    supernode = SuperNode(
        superlink_address=fleet,
        node_config=SuperNodeConfig(trainer_url=trainer_url),
        work_dir=work,
        name=name,
    ).start()
    stack.callback(supernode.stop)
    member = Member(name, node.client, node.node_id, trainer, server, supernode)
    member.beating.set()
    return member


def join(member: Member, group_id: int) -> None:
    fid = member.supernode.wait_connected(timeout=60)
    member.client.join_group(group_id, member.node_id, flower_node_id=fid)
    member.group_id = group_id


def host_group(stack: ExitStack, url: str, work: Path, **kwargs: Any) -> GroupHost:
    config = dataclasses.replace(RUN_CONFIG, **kwargs.pop("run_config", {}))
    kwargs.setdefault("creator_token", OPERATOR_TOKEN)  # a host without a node
    host = GroupHost(
        url, name="g", work_dir=work, run_config=config, heartbeat_interval=1.0, **kwargs
    )
    stack.callback(host.stop)
    host.start()
    return host


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, list[Member], ExitStack]]:
    """A registry with a short node TTL, and heartbeats for the members a test adds."""
    with ExitStack() as stack:
        url, _ = stack.enter_context(start_registry(tmp_path, node_ttl=NODE_TTL))
        members: list[Member] = []
        stop = threading.Event()

        def heartbeats() -> None:
            while not stop.wait(HEARTBEAT_EVERY):
                for m in list(members):
                    m.beat()

        beater = threading.Thread(target=heartbeats, daemon=True)
        beater.start()
        try:
            yield url, members, stack
        finally:  # before the stack closes the members' clients
            stop.set()
            beater.join(5)


def wait_round(
    client: RegistryClient, gid: int, at_least: int, timeout: float = 120
) -> GroupDetail:
    return wait_for(
        lambda: (g := client.get_group(gid)).round is not None and g.round >= at_least and g,
        timeout=timeout,
        interval=0.5,
        what=f"group {gid} at round {at_least}",
    )


@pytest.fixture
def group(registry, tmp_path: Path) -> tuple[str, GroupHost, list[Member], ExitStack]:
    url, members, stack = registry
    return url, host_group(stack, url, tmp_path / "group"), members, stack


def test_rounds_train_live_members_and_publish_model(group, tmp_path: Path) -> None:
    url, host, members, stack = group
    assert host.group_id is not None and host.fleet_address is not None
    for i in range(2):
        members.append(start_member(stack, url, host.fleet_address, tmp_path, f"m{i}", i))
    stranger = start_member(stack, url, host.fleet_address, tmp_path, "stranger", 2)
    for m in members:
        join(m, host.group_id)
    stranger.supernode.wait_connected(timeout=60)
    members.append(stranger)  # heartbeats (alive, flower id known) but never joins

    reader = stack.enter_context(RegistryClient(url))
    total = sum(m.trainer.num_examples for m in members[:2])

    def rounds_with_both() -> list[dict] | None:
        full = [r for r in reader.get_group(host.group_id).rounds if r.num_nodes == 2]
        return full if len(full) >= 2 else None

    wait_for(rounds_with_both, timeout=120, interval=0.5, what="two rounds with both members")
    rounds = reader.get_group(host.group_id).rounds
    assert [r.round for r in rounds] == list(range(1, len(rounds) + 1))
    for r in rounds:  # the first round may start before the second member joined
        assert 0.0 <= r.accuracy <= 1.0 and r.loss > 0
        assert r.num_nodes in (1, 2)
        assert r.num_nodes == 1 or r.num_examples == total
    model = reader.get_model(host.group_id)
    assert model is not None
    assert sha256_hex(model) == reader.get_group(host.group_id).model_sha256
    for m in members[:2]:
        assert m.trainer.last_round is not None and m.trainer.group_score is not None
        assert m.trainer.flower_node_id == m.supernode.flower_node_id
    assert stranger.trainer.last_round is None, "a non-member's SuperNode got work"


def test_killed_member_does_not_stall_rounds(group, tmp_path: Path) -> None:
    url, host, members, stack = group
    assert host.group_id is not None and host.fleet_address is not None
    for i in range(3):
        members.append(start_member(stack, url, host.fleet_address, tmp_path, f"k{i}", i))
    for m in members:
        join(m, host.group_id)
    reader = stack.enter_context(RegistryClient(url))
    before = wait_round(reader, host.group_id, 1).round

    victim = members[2]
    victim.beating.clear()
    victim.supernode.kill()  # SIGKILL: Flower itself notices only after ~50 s

    def two_node_rounds() -> list[dict] | None:
        rounds = [r for r in reader.get_group(host.group_id).rounds if r.round > before]
        full = [r for r in rounds if r.num_nodes == 2]
        return full if len(full) >= 2 else None

    wait_for(two_node_rounds, timeout=90, interval=0.5, what="two rounds without the victim")
    # The ServerApp stopped sending to the dead member: rounds of 2 targets out of 2.
    log = host.run_log()
    assert re.search(r"round \d+: 2/2 nodes", log), log[-2000:]
    assert members[0].trainer.last_round is not None
    assert members[0].trainer.last_round > before


def test_group_resumes_from_the_registry_model_and_ends_after_num_rounds(
    registry, tmp_path: Path
) -> None:
    url, members, stack = registry
    seed = model_lib.get_weights(model_lib.create_model(42))
    host = host_group(
        stack,
        url,
        tmp_path / "group",
        seed_model=weights_to_bytes(seed),
        run_config={"num_rounds": 1},
    )
    assert host.group_id is not None and host.fleet_address is not None
    member = start_member(stack, url, host.fleet_address, tmp_path, "r0", 0)
    members.append(member)
    join(member, host.group_id)
    reader = stack.enter_context(RegistryClient(url))
    wait_round(reader, host.group_id, 1)
    wait_for(lambda: not host.is_healthy(), timeout=60, what="serverapp ended after 1 round")

    assert [r.round for r in reader.get_group(host.group_id).rounds] == [1]
    received = member.trainer.last_group_arrays
    assert member.trainer.last_round == 1 and received is not None
    assert all(np.array_equal(a, b) for a, b in zip(received, seed, strict=True))
