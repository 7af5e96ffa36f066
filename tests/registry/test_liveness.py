"""Whose silence is it (``mycelium.registry.store.liveness``): the registry's own outages,
self-preservation, members vouching for their group. Store-level, two injected clocks (wall
and monotonic), no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from mycelium.registry.store import (
    GroupCreatedRecord,
    GroupSpec,
    Heartbeat,
    NodeCreatedRecord,
    RoundReport,
    Store,
    hash_secret,
    make_store,
)
from mycelium.registry.store.liveness import Preservation
from tests.conftest import FakeClock, registry_app, sweep

T = TypeVar("T")
NODE_TTL, GROUP_TTL = 10.0, 40.0  # the loopback figures
OPERATOR = "operator-token-of-the-liveness-tests"


@dataclass
class Clocks:
    """The wall clock and the sweeper's monotonic one, advanced together or apart."""

    wall: FakeClock
    mono: FakeClock

    def advance(self, seconds: float, *, registry_ran: bool = True) -> None:
        """Time passes; ``registry_ran=False``: the registry was stopped meanwhile."""
        self.wall.advance(seconds)
        self.mono.advance(seconds)
        if registry_ran:
            self.mono.advance(-seconds + min(seconds, 1.0))  # one sweep interval, no gap


@pytest.fixture
def clocks() -> Clocks:
    return Clocks(FakeClock(), FakeClock(1000.0))


@pytest.fixture
def db(database: Path | str) -> Path | str:
    """Both stores: a SQLite file, a PostgreSQL database (the ``database`` fixture)."""
    return database


@asynccontextmanager
async def opened(
    db: Path | str, clocks: Clocks, policy: Preservation | None
) -> AsyncIterator[Store]:
    store = make_store(
        db,
        node_ttl=NODE_TTL,
        group_ttl=GROUP_TTL,
        clock=clocks.wall,
        monotonic=clocks.mono,
        flush_interval=1.0,
        checkpoint_interval=3600.0,
        operator_token_hash=hash_secret(OPERATOR),
        preservation=policy,
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def run(
    db: Path | str,
    clocks: Clocks,
    body: Callable[[Store], Awaitable[T]],
    policy: Preservation | None = None,
) -> T:
    async def main() -> T:
        async with opened(db, clocks, policy) as store:
            return await body(store)

    return asyncio.run(main())


def spec(certificate: str | None = None) -> GroupSpec:
    return GroupSpec(
        name="g",
        fleet_address="127.0.0.1:9092",
        task="digits",
        max_capacity=10,
        join_policy="open",
        performance_threshold=0.05,
        certificate=certificate,
    )


async def group_of(
    store: Store, size: int, certificate: str | None = None
) -> tuple[GroupCreatedRecord, list[NodeCreatedRecord]]:
    group = await store.create_group(spec=spec(certificate), token=OPERATOR)
    nodes = []
    for i in range(size):
        node = await store.create_node(name=f"n{i}", address=None, num_samples=1, task="digits")
        await store.join(
            group_id=group.group_id,
            node_id=node.node_id,
            token=node.token,
            invite_code=None,
            flower_node_id=None,
            public_key=f"key-{i}",
        )
        nodes.append(node)
    return group, nodes


async def beat(store: Store, node: NodeCreatedRecord, group_id: int | None, rnd: int) -> None:
    hb = Heartbeat(node.node_id, group_id, None, None, 1, rnd, None)
    await store.heartbeat(beat=hb, token=node.token)


async def report(store: Store, group: GroupCreatedRecord, rnd: int) -> None:
    r = RoundReport(round=rnd, accuracy=0.5, loss=1.0, num_nodes=3, num_examples=30)
    await store.report_round(group_id=group.group_id, token=group.group_token, report=r)


async def status(store: Store, group_id: int) -> tuple[str, bool]:
    detail = await store.get_group(group_id=group_id)
    return detail["status"], detail["alive"]


async def swept(store: Store, group: GroupCreatedRecord) -> str:
    """Sweep, then the group's status."""
    await store.sweep()
    return (await status(store, group.group_id))[0]


async def types(store: Store) -> list[str]:
    return [e["type"] for e in await store.events(since=0, limit=1000)]


# -- the registry's own outage ----------------------------------------------------------------


def test_a_sweep_after_a_stop_credits_the_gap_to_everyone(db: Path | str, clocks: Clocks) -> None:
    """The issue's SIGSTOP: 60 s stopped with group TTL 40; nothing fails, nobody is evicted,
    and the grace is one TTL, not forever."""

    async def body(store: Store) -> None:
        group, nodes = await group_of(store, 3)
        await report(store, group, 1)
        await store.sweep()
        clocks.advance(60, registry_ran=False)
        await store.sweep()
        assert await status(store, group.group_id) == ("active", True)
        members = (await store.get_group(group_id=group.group_id))["members"]
        assert [m["alive"] for m in members] == [True, True, True]
        assert "registry_resumed" in await types(store)
        assert "group_failed" not in await types(store) and "evicted" not in await types(store)
        clocks.advance(GROUP_TTL + 1)  # nobody speaks for a whole TTL after the resume
        assert await swept(store, group) == "failed"

    run(db, clocks, body)


def test_a_sweep_on_time_does_not_credit_anything(db: Path | str, clocks: Clocks) -> None:
    async def body(store: Store) -> None:
        group, _ = await group_of(store, 1)
        await store.sweep()
        clocks.advance(GROUP_TTL + 1)  # the registry ran all along: the group was silent
        assert await swept(store, group) == "failed"
        assert "registry_resumed" not in await types(store)

    run(db, clocks, body)


def test_a_restart_credits_the_time_the_registry_was_down(db: Path | str, clocks: Clocks) -> None:
    async def first(store: Store) -> int:
        group, _ = await group_of(store, 2)
        await store.sweep()  # persists the last sweep's time
        return group.group_id

    group_id = run(db, clocks, first)
    clocks.advance(300, registry_ran=False)

    async def second(store: Store) -> None:
        assert await status(store, group_id) == ("active", True)
        await store.sweep()
        assert await status(store, group_id) == ("active", True)
        assert [m["alive"] for m in (await store.get_group(group_id=group_id))["members"]] == [
            True,
            True,
        ]
        events = await store.events(since=0, limit=1000)
        resumed = [e for e in events if e["type"] == "registry_resumed"]
        assert resumed and resumed[0]["data"] == {"away_s": 300.0, "cause": "restart"}

    run(db, clocks, second)


def test_signs_of_life_after_the_last_sweep_are_credited_too(
    db: Path | str, clocks: Clocks
) -> None:
    """kill -9 just before a sweep: every heartbeat and report of the last second came after
    the last sweep. The registry heard them all; its silence since is its own. (Crediting
    only what was older than the last sweep dissolved such a group at restart in ``bench
    faults --scenario outage``.)"""

    async def first(store: Store) -> int:
        group, nodes = await group_of(store, 2)
        await report(store, group, 1)
        await store.sweep()
        clocks.advance(0.9)
        await report(store, group, 2)
        for node in nodes:
            await beat(store, node, group.group_id, 2)
        return group.group_id

    group_id = run(db, clocks, first)
    clocks.advance(GROUP_TTL + NODE_TTL + 20, registry_ran=False)

    async def second(store: Store) -> None:
        await store.sweep()
        assert await status(store, group_id) == ("active", True)
        members = (await store.get_group(group_id=group_id))["members"]
        assert [m["alive"] for m in members] == [True, True]
        assert not {"dissolved", "evicted", "group_failed"} & set(await types(store))

    run(db, clocks, second)


# -- members vouch for their group ------------------------------------------------------------


def test_members_with_an_advancing_round_keep_a_silent_host_s_group(
    db: Path | str, clocks: Clocks
) -> None:
    """The issue's partition: the host cannot reach the registry, its members can."""

    async def body(store: Store) -> None:
        group, nodes = await group_of(store, 3)
        await report(store, group, 5)
        for rnd in range(6, 16):  # 10 rounds of 9 s, no host report: 90 s > GROUP_TTL
            clocks.advance(9)
            for node in nodes:
                await beat(store, node, group.group_id, rnd)
            await store.sweep()
            assert await status(store, group.group_id) == ("active", True), rnd
        assert "group_failed" not in await types(store)
        for _ in range(3):  # members alive, but no round advances for a TTL: not training
            clocks.advance(GROUP_TTL / 2 + 1)
            for node in nodes:
                await beat(store, node, group.group_id, 15)
            await store.sweep()
        assert (await status(store, group.group_id))[0] == "failed"

    run(db, clocks, body)


def test_a_minority_cannot_vouch_nor_revive_a_failed_group(db: Path | str, clocks: Clocks) -> None:
    async def body(store: Store) -> None:
        group, nodes = await group_of(store, 3)
        await report(store, group, 5)
        clocks.advance(GROUP_TTL + 1)
        for node, rnd in zip(nodes, (99, 5, 5), strict=True):  # one liar, two honest
            await beat(store, node, group.group_id, rnd)
        assert await swept(store, group) == "failed"
        for node in nodes:  # all of them now: a failed group stays failed
            await beat(store, node, group.group_id, 100)
        clocks.advance(1)
        assert await swept(store, group) == "failed"
        await report(store, group, 6)  # only its host revives it
        assert await status(store, group.group_id) == ("active", True)

    run(db, clocks, body)


def test_vouching_ends_after_its_bound(db: Path | str, clocks: Clocks) -> None:
    """Lying members with ever-rising rounds keep a dead host's group at most 5 TTLs."""

    async def body(store: Store) -> None:
        group, nodes = await group_of(store, 2)
        rnd, kept = 1, 0.0
        while (await status(store, group.group_id))[0] == "active":
            clocks.advance(5)
            kept += 5
            rnd += 1
            for node in nodes:
                await beat(store, node, group.group_id, rnd)
            await store.sweep()
        assert 4 * GROUP_TTL < kept <= 5 * GROUP_TTL + 5  # + one step of this loop

    run(db, clocks, body)


def test_where_the_group_admits_only_admitted_members_vouch(db: Path | str, clocks: Clocks) -> None:
    async def body(store: Store) -> tuple[str, str]:
        outcomes = []
        for admitted in (0, 2):
            group, nodes = await group_of(store, 3, certificate="PEM of the group")
            for i, node in enumerate(nodes[:admitted]):
                await store.admit(
                    group_id=group.group_id,
                    token=group.group_token,
                    node_id=node.node_id,
                    public_key=f"key-{i}",
                    flower_node_id=i,
                )
            clocks.advance(GROUP_TTL + 1)
            for node in nodes:
                await beat(store, node, group.group_id, 3)
            await store.sweep()
            outcomes.append((await status(store, group.group_id))[0])
            for node in nodes:
                await store.leave(group_id=group.group_id, node_id=node.node_id, token=node.token)
        return outcomes[0], outcomes[1]

    assert run(db, clocks, body) == ("failed", "active")


# -- self-preservation ------------------------------------------------------------------------


async def network(store: Store, size: int) -> tuple[GroupCreatedRecord, list[NodeCreatedRecord]]:
    group, nodes = await group_of(store, size)
    await store.sweep()
    return group, nodes


async def time_passes(
    store: Store,
    clocks: Clocks,
    seconds: int,
    group: GroupCreatedRecord,
    speaking: list[NodeCreatedRecord],
) -> None:
    """``seconds`` in steps of 2 s: the group's host reports, ``speaking`` nodes beat."""
    for _ in range(seconds // 2):
        clocks.advance(2)
        await store.group_heartbeat(group_id=group.group_id, token=group.group_token)
        for node in speaking:
            await beat(store, node, group.group_id, 1)
        await store.sweep()


def test_a_sudden_loss_holds_expiry_until_heartbeats_recover(
    db: Path | str, clocks: Clocks
) -> None:
    async def body(store: Store) -> None:
        group, nodes = await network(store, 10)
        rest = nodes[4:]  # the first 4 are cut off
        await time_passes(store, clocks, 30, group, rest)  # 4 of 10 cut off for 3 node TTLs
        assert store.preserving and "self_preservation_started" in await types(store)
        assert (await store.get_group(group_id=group.group_id))["num_members"] == 10
        alive = [n["alive"] for n in await store.list_nodes(group_id=None, alive=None)]
        assert alive == [True] * 10
        stats = await store.stats()
        assert stats.nodes_alive == 10
        await time_passes(store, clocks, 4, group, nodes)  # the partition heals
        assert not store.preserving
        ended = [e for e in await store.events(since=0, limit=1000) if e["type"].endswith("ended")]
        assert ended[-1]["data"]["reason"] == "recovered"
        assert "evicted" not in await types(store)

    run(db, clocks, body)


def test_self_preservation_ends_after_its_bound(db: Path | str, clocks: Clocks) -> None:
    async def body(store: Store) -> None:
        group, nodes = await network(store, 10)
        await time_passes(store, clocks, 14, group, nodes[4:])
        assert store.preserving
        await time_passes(store, clocks, 60, group, nodes[4:])  # max_s 30 s: they are dead now
        assert not store.preserving
        ended = [e for e in await store.events(since=0, limit=1000) if e["type"].endswith("ended")]
        assert [e["data"]["reason"] for e in ended] == ["bound"]  # and it did not start again
        assert (await store.get_group(group_id=group.group_id))["num_members"] == 6

    run(db, clocks, body, Preservation(max_s=30.0))


def test_one_death_or_a_small_share_is_no_event(db: Path | str, clocks: Clocks) -> None:
    async def body(store: Store) -> None:
        group, nodes = await network(store, 10)
        await time_passes(store, clocks, 30, group, nodes[1:])  # 1 of 10 (10 %): an ordinary death
        assert not store.preserving
        assert (await store.get_group(group_id=group.group_id))["num_members"] == 9

    run(db, clocks, body)


@pytest.mark.parametrize("threshold", [0.15, 1.0])
def test_the_settings_reach_the_store_and_health_says_it(tmp_path: Path, threshold: float) -> None:
    """--self-preservation-threshold/-max as Settings; 1 turns self-preservation off."""
    wall = FakeClock()
    settings = {"self_preservation_threshold": threshold, "self_preservation_max_s": 60.0}
    with registry_app(tmp_path / "r.db", node_ttl=NODE_TTL, clock=wall, **settings) as api:
        store: Store = api.app.state.storage  # type: ignore[attr-defined]
        assert store.preservation == Preservation(threshold=threshold, max_s=60.0)
        for i in range(5):
            api.post("/nodes", json={"name": f"n{i}", "num_samples": 1})
        sweep(api)
        wall.advance(NODE_TTL + 1)  # all five lost at once: 100 %
        sweep(api)
        holds = threshold < 1.0
        assert api.get("/health").json() == {"status": "ok", "self_preservation": holds}
        assert f"mycelium_self_preservation {float(holds)}" in api.get("/metrics").text
