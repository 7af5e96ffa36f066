"""Placement against the real registry app: lying groups cannot hide the group that fits.

Six lying groups claim accuracy 1.0 in their round reports (their models are untrained);
one honest group claims 0.7, its two members report 0.9, and its model is trained on this
node's kind of data. With three candidate slots, the old choice (the first three of
discovery sorted by claims) probed liars only; the registry now sorts by verified accuracy,
and the agent's shared candidate choice ranks by it too (whatever order it is served), so
the node probes and joins the honest group.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mycelium.client import RegistryClient
from mycelium.flower.trainer import LocalTrainer
from mycelium.learning import data, model, policy
from mycelium.learning.codec import weights_to_bytes
from mycelium.node.placement import REACH_ATTEMPTS, Placement, superlink_reachable
from tests.conftest import OPERATOR_TOKEN, FakeClock, registry_app

LIARS = 6


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with registry_app(tmp_path / "registry.db", clock=FakeClock()) as client:
        yield client


@pytest.fixture
def superlinks() -> Iterator[list[str]]:
    """Listening sockets standing in for the groups' SuperLink ports (reachability only)."""
    with ExitStack() as stack:
        addresses = []
        for _ in range(LIARS + 1):
            listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
            addresses.append(f"127.0.0.1:{listener.getsockname()[1]}")
        yield addresses


def publish(api: TestClient, name: str, fleet: str, claim: float, weights: model.Weights) -> int:
    group = registry(api, OPERATOR_TOKEN).create_group(
        name=name, fleet_address=fleet, max_capacity=10
    )
    owner = registry(api, group.group_token)
    owner.report_round(
        group.group_id, round=1, accuracy=claim, loss=1.0, num_nodes=1, num_examples=10
    )
    owner.put_model(group.group_id, weights_to_bytes(weights))
    return group.group_id


def registry(api: TestClient, token: str | None = None) -> RegistryClient:
    return RegistryClient("http://testserver", http=api, token=token)


def placement_for(client: RegistryClient, trainer: LocalTrainer) -> Placement:
    """A node's placement with no warm-up and three candidate slots."""
    return Placement(
        client,
        trainer,
        policy_config=policy.PolicyConfig(warmup_s=0.0),
        invite_ok=False,
        max_candidates=3,
        clock=FakeClock(),
        seed=0,
    )


def add_members(api: TestClient, group_id: int, reports: list[float]) -> None:
    for k, accuracy in enumerate(reports):
        member = registry(api)
        node = member.register_node(name=f"member-{k}", num_samples=10)
        member.join_group(group_id, node.node_id)
        member.heartbeat(node.node_id, group_id=group_id, accuracy=accuracy)


def test_lying_groups_cannot_hide_the_honest_group(api: TestClient, superlinks: list[str]) -> None:
    client = registry(api)
    mine = data.make_partition(scenario="rotate", clusters=2, index=0, num_clients=4, seed=0)
    trainer = LocalTrainer(mine, seed=0)
    trainer.warm_up(2)
    peer = LocalTrainer(
        data.make_partition(scenario="rotate", clusters=2, index=2, num_clients=4, seed=0),
        seed=1,
    )
    peer.warm_up(20)  # the honest group's model: trained on the same cluster's data
    untrained = model.get_weights(model.create_model(99))
    liars = [publish(api, f"liar-{k}", superlinks[k], 1.0, untrained) for k in range(LIARS)]
    honest = publish(api, "honest", superlinks[LIARS], 0.7, peer.local_arrays())
    add_members(api, honest, [0.9, 0.9])
    api.app.state.settings.clock.advance(2.0)  # past the discovery snapshot's max age

    groups = client.list_groups(limit=100)
    assert {g.group_id for g in groups[:3]} != set(liars[:3])  # sorted by verified
    by_claim = sorted(groups, key=lambda g: (-g.accuracy, -g.num_members, g.group_id))
    assert {g.group_id for g in by_claim[:3]} <= set(liars)  # the old choice: liars only

    # Served in the registry's order or in the claims' order, the node joins the honest one.
    for listed in (groups, by_claim):
        placement = placement_for(client, trainer)
        decision = placement.decide(listed, None)
        assert (decision.action, decision.group_id) == ("join", honest)
        assert placement.state.unprobed == LIARS + 1 - 3


def test_a_member_reports_only_its_current_groups_score(api: TestClient, tmp_path: Path) -> None:
    """What feeds verified accuracy and vouching: nothing of another group (its score or its
    round), nor the local score."""
    from mycelium.node.membership import Membership
    from tests.node.test_agent import agent_for, node_config

    agent = agent_for(api, node_config(tmp_path), FakeClock(0.0))
    try:
        in_7 = Membership(group_id=7, fleet_address="127.0.0.1:1", supernode=None)
        assert agent._group_accuracy(in_7) is None  # no probe of 7 and no round in it yet
        assert agent._group_round(in_7) is None and agent._group_round(None) is None
        agent.placement.state = dataclasses.replace(
            agent.placement.state, current_group_id=7, current_score=0.6
        )
        assert agent._group_accuracy(in_7) == 0.6  # our last probe of group 7
        agent.trainer.fit(agent.trainer.local_arrays(), {"local-epochs": 1}, round=1)
        assert agent._group_accuracy(in_7) == agent.trainer.group_score  # a round ran in 7
        assert agent._group_round(in_7) == 1
        in_8 = Membership(group_id=8, fleet_address="127.0.0.1:1", supernode=None)
        assert agent._group_accuracy(in_8) is None  # group 7's round says nothing of 8
        assert agent._group_round(in_8) is None  # nor does its round number (vouching)
    finally:
        agent.shutdown()


def test_a_superlink_is_unreachable_only_when_every_try_fails() -> None:
    """One lost SYN must not make a healthy group look dead (bench faults, lossy)."""
    tries: list[tuple[int, str]] = []

    def flaky(failures: int) -> Callable[[int, str], bool]:
        def connect(port: int, host: str) -> bool:
            tries.append((port, host))
            return len(tries) > failures

        return connect

    assert superlink_reachable("10.0.0.7:9092", connect=flaky(REACH_ATTEMPTS - 1))
    assert tries[-1] == (9092, "10.0.0.7") and len(tries) == REACH_ATTEMPTS
    tries.clear()
    assert not superlink_reachable("10.0.0.7:9092", connect=flaky(REACH_ATTEMPTS))
    assert len(tries) == REACH_ATTEMPTS
    assert not superlink_reachable("no-port", connect=flaky(0))


def test_superlink_reachable_against_real_sockets() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert superlink_reachable(f"127.0.0.1:{port}")
    assert not superlink_reachable(f"127.0.0.1:{port}")  # closed: refused at once, thrice
