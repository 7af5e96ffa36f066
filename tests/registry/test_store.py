"""The store on its own: no HTTP, a real SQLite file per test, an injected clock."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from mycelium.registry.store import (
    ConflictError,
    ForbiddenError,
    GroupSpec,
    Heartbeat,
    LimitError,
    Model,
    NotFoundError,
    RoundReport,
    Store,
    StoreUnusable,
    check_database,
    hash_secret,
)
from mycelium.registry.store.audit import audit
from mycelium.registry.store.schema import SCHEMA
from tests.conftest import ROOT, FakeClock, registry_app

T = TypeVar("T")
NODE_TTL, GROUP_TTL = 90.0, 120.0
OPERATOR = "operator-token-of-the-store-tests"


def spec(capacity: int = 10, policy: str = "open") -> GroupSpec:
    return GroupSpec(
        name="g",
        fleet_address="127.0.0.1:9092",
        task="digits",
        max_capacity=capacity,
        join_policy=policy,
        performance_threshold=0.05,
    )


def beat(node_id: int, group_id: int | None, accuracy: float | None = None) -> Heartbeat:
    return Heartbeat(node_id, group_id, accuracy, None, 1, None, None)


@asynccontextmanager
async def opened(db: Path, clock: FakeClock, **kwargs: float) -> AsyncIterator[Store]:
    # Long background intervals: a test decides when heartbeats are flushed.
    kwargs = {"flush_interval": 1.0, "checkpoint_interval": 3600.0, **kwargs}
    store = Store(
        db,
        node_ttl=NODE_TTL,
        group_ttl=GROUP_TTL,
        clock=clock,
        operator_token_hash=hash_secret(OPERATOR),
        max_groups_per_node=2,
        **kwargs,
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def run(db: Path, clock: FakeClock, body: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        async with opened(db, clock) as store:
            return await body(store)

    return asyncio.run(main())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_heartbeat_is_queued_then_committed_before_a_read(db: Path, clock: FakeClock) -> None:
    async def body(store: Store) -> None:
        node = await store.create_node(name="a", address=None, num_samples=1, task="digits")
        clock.advance(3)
        assert await store.heartbeat(beat=beat(node.node_id, None, 0.7), token=node.token) is None
        assert rows(db, "SELECT accuracy FROM nodes") == [(None,)]  # queued, not written yet
        read = await store.get_node(node_id=node.node_id)
        assert read["accuracy"] == 0.7 and read["last_seen"] == clock.now
        assert rows(db, "SELECT accuracy FROM nodes") == [(0.7,)]

    run(db, clock, body)


def test_refused_change_rolls_back_alone_and_keeps_queued_heartbeats(
    db: Path, clock: FakeClock
) -> None:
    async def body(store: Store) -> None:
        a = await store.create_node(name="a", address=None, num_samples=1, task="digits")
        b = await store.create_node(name="b", address=None, num_samples=1, task="digits")
        group = await store.create_group(spec=spec(capacity=1), token=OPERATOR)
        await store.join(
            group_id=group.group_id,
            node_id=a.node_id,
            token=a.token,
            invite_code=None,
            flower_node_id=None,
        )
        await store.heartbeat(beat=beat(a.node_id, group.group_id, 0.9), token=a.token)
        with pytest.raises(ConflictError, match="full"):
            await store.join(
                group_id=group.group_id,
                node_id=b.node_id,
                token=b.token,
                invite_code=None,
                flower_node_id=None,
            )
        assert rows(db, "SELECT id, group_id, accuracy FROM nodes ORDER BY id") == [
            (a.node_id, group.group_id, 0.9),
            (b.node_id, None, None),
        ]

    run(db, clock, body)


def test_concurrent_joins_on_the_loop_respect_capacity(db: Path, clock: FakeClock) -> None:
    async def body(store: Store) -> list[object]:
        group = await store.create_group(spec=spec(capacity=3), token=OPERATOR)
        nodes = [
            await store.create_node(name=f"n{i}", address=None, num_samples=1, task="digits")
            for i in range(12)
        ]
        joins = [
            store.join(
                group_id=group.group_id,
                node_id=n.node_id,
                token=n.token,
                invite_code=None,
                flower_node_id=None,
            )
            for n in nodes
        ]
        return await asyncio.gather(*joins, return_exceptions=True)

    results = run(db, clock, body)
    assert results.count(None) == 3
    assert all(isinstance(r, ConflictError) for r in results if r is not None)
    assert rows(db, "SELECT COUNT(*) FROM nodes WHERE group_id IS NOT NULL") == [(3,)]


def test_tokens_are_checked_and_survive_a_reopen(db: Path, clock: FakeClock) -> None:
    async def first(store: Store) -> tuple[int, str, int, str]:
        node = await store.create_node(name="a", address=None, num_samples=1, task="digits")
        group = await store.create_group(spec=spec(), token=node.token)
        with pytest.raises(ForbiddenError):
            await store.heartbeat(beat=beat(node.node_id, None), token=group.group_token)
        with pytest.raises(ForbiddenError):
            await store.group_heartbeat(group_id=group.group_id, token=node.token)
        with pytest.raises(ForbiddenError, match="neither"):
            await store.create_group(spec=spec(), token="bogus")
        with pytest.raises(NotFoundError):
            await store.heartbeat(beat=beat(999, None), token=node.token)
        return node.node_id, node.token, group.group_id, group.group_token

    node_id, token, group_id, group_token = run(db, clock, first)

    async def second(store: Store) -> None:
        assert await store.heartbeat(beat=beat(node_id, None), token=token) is None
        await store.group_heartbeat(group_id=group_id, token=group_token)
        events = await store.events(since=0, limit=10)
        assert events[-1]["type"] == "group_created"
        assert events[-1]["data"]["by_node_id"] == node_id

    run(db, clock, second)


def test_close_commits_queued_heartbeats(db: Path, clock: FakeClock) -> None:
    async def body(store: Store) -> int:
        node = await store.create_node(name="a", address=None, num_samples=1, task="digits")
        await store.heartbeat(beat=beat(node.node_id, None, 0.4), token=node.token)
        return node.node_id

    run(db, clock, body)
    assert rows(db, "SELECT accuracy FROM nodes") == [(0.4,)]


def test_refused_migration_keeps_the_node_and_writes_no_event(db: Path, clock: FakeClock) -> None:
    async def body(store: Store) -> None:
        node = await store.create_node(name="a", address=None, num_samples=1, task="digits")
        home = await store.create_group(spec=spec(), token=OPERATOR)
        closed = await store.create_group(spec=spec(policy="invite-only"), token=OPERATOR)
        await store.join(
            group_id=home.group_id,
            node_id=node.node_id,
            token=node.token,
            invite_code=None,
            flower_node_id=None,
        )
        with pytest.raises(ForbiddenError, match="invite"):
            await store.migrate(
                node_id=node.node_id,
                token=node.token,
                to_group_id=closed.group_id,
                invite_code="wrong",
                reason="r",
                expected_gain=0.1,
            )
        assert (await store.get_node(node_id=node.node_id))["group_id"] == home.group_id
        moved = await store.migrate(
            node_id=node.node_id,
            token=node.token,
            to_group_id=closed.group_id,
            invite_code=closed.invite_code,
            reason="r",
            expected_gain=0.1,
        )
        assert moved == home.group_id
        types = [e["type"] for e in await store.events(since=0, limit=100)]
        assert types.count("migrated") == 1

    run(db, clock, body)


def test_discovery_snapshot_is_reused_until_a_change_or_max_age(db: Path, clock: FakeClock) -> None:
    query = {"task": None, "has_capacity": None, "limit": 20, "offset": 0, "include_dead": False}

    async def body(store: Store) -> None:
        await store.create_group(spec=spec(), token=OPERATOR)
        first = await store.list_groups(**query)
        assert await store.list_groups(**query) is first
        clock.advance(store.max_age + 0.01)
        aged = await store.list_groups(**query)
        assert aged is not first and aged == first
        await store.create_group(spec=spec(), token=OPERATOR)
        assert len(await store.list_groups(**query)) == 2

    run(db, clock, body)


def test_sweep_fails_silent_groups_then_dissolves_empty_ones(db: Path, clock: FakeClock) -> None:
    async def body(store: Store) -> None:
        node = await store.create_node(name="a", address=None, num_samples=1, task="digits")
        group = await store.create_group(spec=spec(), token=OPERATOR)
        await store.join(
            group_id=group.group_id,
            node_id=node.node_id,
            token=node.token,
            invite_code=None,
            flower_node_id=None,
        )
        clock.advance(GROUP_TTL + 1)
        await store.heartbeat(beat=beat(node.node_id, group.group_id), token=node.token)
        await store.sweep()
        assert (await store.get_group(group_id=group.group_id))["status"] == "failed"
        clock.advance(NODE_TTL + GROUP_TTL + 1)
        await store.sweep()
        assert (await store.get_group(group_id=group.group_id))["status"] == "dissolved"
        assert await store.heartbeat(beat=beat(node.node_id, None), token=node.token) is None
        with pytest.raises(ConflictError, match="dissolved"):
            report = RoundReport(round=1, accuracy=0.5, loss=1.0, num_nodes=1, num_examples=1)
            await store.report_round(
                group_id=group.group_id, token=group.group_token, report=report
            )

    run(db, clock, body)


def test_model_blob_round_trip_on_the_helper_thread(db: Path, clock: FakeClock) -> None:
    async def body(store: Store) -> None:
        group = await store.create_group(spec=spec(), token=OPERATOR)
        with pytest.raises(NotFoundError, match="no model"):
            await store.get_model(group_id=group.group_id)
        model = Model(sha256="ab" * 32, data=b"\x00\x01" * 1000)
        await store.put_model(group_id=group.group_id, token=group.group_token, model=model)
        assert await store.get_model(group_id=group.group_id) == model
        with pytest.raises(NotFoundError):
            await store.get_model(group_id=999)

    run(db, clock, body)


def test_a_node_owns_a_bounded_number_of_live_groups(db: Path, clock: FakeClock) -> None:
    async def body(store: Store) -> None:
        node = await store.create_node(name="a", address=None, num_samples=1, task="digits")
        first = await store.create_group(spec=spec(), token=node.token)
        await store.create_group(spec=spec(), token=node.token)
        with pytest.raises(LimitError, match="at most 2"):
            await store.create_group(spec=spec(), token=node.token)
        for _ in range(3):  # the operator is not bounded
            await store.create_group(spec=spec(), token=OPERATOR)
        await store.close_group(group_id=first.group_id, token=first.group_token)
        third = await store.create_group(spec=spec(), token=node.token)  # a closed one frees
        clock.advance(GROUP_TTL + 1)  # silent groups are not live: they free their places
        await store.group_heartbeat(group_id=third.group_id, token=third.group_token)
        await store.create_group(spec=spec(), token=node.token)
        with pytest.raises(LimitError):
            await store.create_group(spec=spec(), token=node.token)

    run(db, clock, body)
    creators = rows(db, "SELECT creator_node_id FROM groups ORDER BY id")
    assert creators == [(1,), (1,), (None,), (None,), (None,), (1,), (1,)]


def test_an_older_file_gets_the_creator_column(db: Path, clock: FakeClock) -> None:
    before = SCHEMA.replace(",\n    creator_node_id INTEGER", "")  # the first release's
    assert before != SCHEMA
    with sqlite3.connect(db) as conn:
        conn.executescript(before)
    run(db, clock, lambda store: asyncio.sleep(0))
    assert "creator_node_id" in [r[1] for r in rows(db, "PRAGMA table_info(groups)")]


def test_check_database_refuses_an_unusable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnusable, match="not usable"):
        check_database(blocker / "r.db")
    check_database(tmp_path / "ok.db")
    assert rows(tmp_path / "ok.db", "PRAGMA journal_mode") == [("wal",)]


def test_store_and_client_import_without_fastapi() -> None:
    code = (
        "import sys, mycelium.registry.store, mycelium.client; "
        "print(','.join(m for m in ('fastapi', 'starlette') if m in sys.modules) or 'clean')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def test_no_sqlite_outside_the_store() -> None:
    """store/ is the only code that touches SQLite (tests may read the file directly)."""
    store_dir = ROOT / "mycelium" / "registry" / "store"
    sources = [
        *ROOT.glob("*.py"),
        *(ROOT / "mycelium").rglob("*.py"),
        *(ROOT / "bench").glob("*.py"),
    ]
    users = [
        str(p.relative_to(ROOT))
        for p in sources
        if store_dir not in p.parents and "sqlite3" in p.read_text(encoding="utf-8")
    ]
    assert users == []


def test_the_audit_reads_what_the_registry_wrote(tmp_path: Path) -> None:
    """bench faults checks a run's file through the store's read-only audit."""
    db = tmp_path / "registry.db"
    with registry_app(db) as api:
        node = api.post("/nodes", json={"name": "n", "num_samples": 1}).json()
    found = audit(db)
    assert found.integrity == "ok"
    assert found.nodes == {node["node_id"]: None} and found.groups == frozenset()
    assert [e[:1] + e[2:] for e in found.events] == [("node_registered", node["node_id"], None)]
