"""GET /dashboard/snapshot on the in-process registry app (TestClient, SQLite and PostgreSQL):
what the page opens from, its caps, and that the stream followed from its cursor brings
exactly the later events (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
from contextlib import aclosing, closing
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from mycelium.dashboard.models import HISTORY_PER_NODE, RECENT_EVENTS, Snapshot
from mycelium.dashboard.routes import STATIC
from mycelium.dashboard.sources import snapshot_reader, state_reader
from mycelium.dashboard.stream import EventFeed
from mycelium.registry.app import storage_sources
from mycelium.registry.store.digest import select_log_digest
from tests.conftest import ROOT, FakeClock, auth, registry_app, sweep
from tests.registry.test_api import NODE_TTL, api, clock, new_group, new_node

__all__ = ["api", "clock"]  # fixtures shared with the registry's API tests

DEADLINE_S = 10.0


def snapshot(api: TestClient, **params: Any) -> dict[str, Any]:
    r = api.get("/dashboard/snapshot", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def all_events(api: TestClient) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        since = events[-1]["id"] if events else 0
        page = api.get("/events", params={"since": since, "limit": 1000}).json()["events"]
        if not page:
            return events
        events += page


def follow(api: TestClient, after: int) -> list[dict[str, Any]]:
    """The events the app's own feed (behind GET /events/stream) sends after ``after``,
    up to its caught-up marker."""
    feed: EventFeed = api.app.state.dashboard.feed  # type: ignore[attr-defined]

    async def read() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with aclosing(feed.follow(after)) as items:
            async for item in items:
                if item.kind == "caught-up":
                    return got
                assert item.kind == "event", item
                got.append(item.data)
        raise AssertionError("the feed ended before it caught up")

    async def within() -> list[dict[str, Any]]:
        return await asyncio.wait_for(read(), DEADLINE_S)

    return api.portal.call(within)


def join(api: TestClient, group: dict[str, Any], node: tuple[int, str]) -> None:
    r = api.post(f"/groups/{group['group_id']}/join", json={"node_id": node[0]},
                 headers=auth(node[1]))  # fmt: skip
    assert r.status_code == 200, r.text


def migrate(api: TestClient, node: tuple[int, str], to: dict[str, Any], gain: float) -> None:
    move = {"to_group_id": to["group_id"], "reason": "better here", "expected_gain": gain}
    r = api.post(f"/nodes/{node[0]}/migrate", json=move, headers=auth(node[1]))
    assert r.status_code == 200, r.text


def test_the_snapshot_holds_the_network_and_what_the_log_showed(
    api: TestClient, clock: FakeClock
) -> None:
    alice, bob, carol = (new_node(api, name) for name in ("alice", "bob", "carol"))
    up, down = new_group(api, name="up", max_capacity=3), new_group(api, name="down")
    for node in (alice, bob, carol):
        join(api, up, node)
    migrate(api, bob, down, 0.25)
    assert api.delete(f"/nodes/{carol[0]}", headers=auth(carol[1])).status_code == 204
    # Four more nodes that all go silent at once: the registry holds expiry.
    quiet = [new_node(api, f"q{i}") for i in range(4)]
    sweep(api)
    clock.advance(NODE_TTL / 2)
    for (node_id, token), group in ((alice, up), (bob, down)):
        beat = {"group_id": group["group_id"]}
        r = api.post(f"/nodes/{node_id}/heartbeat", json=beat, headers=auth(token))
        assert r.status_code == 200, r.text
    clock.advance(NODE_TTL / 2 + 5)
    sweep(api)

    s = snapshot(api)
    Snapshot.model_validate(s)
    log = all_events(api)
    assert s["last_event_id"] == log[-1]["id"]
    assert s["recent_events"] == log  # fewer than the cap: all of them, oldest first
    groups = {g["group_id"]: g for g in s["groups"]}
    assert set(groups) == {up["group_id"], down["group_id"]}
    assert groups[up["group_id"]]["name"] == "up" and groups[up["group_id"]]["num_members"] == 1
    assert groups[down["group_id"]]["num_members"] == 1
    nodes = {n["node_id"]: n for n in s["nodes"]}
    assert set(nodes) == {alice[0], bob[0], *(q[0] for q in quiet)}  # carol is gone
    assert nodes[bob[0]]["group_id"] == down["group_id"]
    assert "last_seen" not in nodes[bob[0]] and "address" not in nodes[bob[0]]

    history: dict[int, list[str]] = {}
    for e in s["history"]:
        history.setdefault(e["node_id"], []).append(e["type"])
    assert history[alice[0]] == ["node_registered", "joined"]
    assert history[bob[0]] == ["node_registered", "joined", "migrated"]
    assert carol[0] not in history  # no panel for a deleted node
    assert [e["id"] for e in s["history"]] == sorted(e["id"] for e in s["history"])
    assert s["migrations"] == 1
    assert s["node_names"][str(carol[0])] == "carol"  # the feed still names her
    types = [e["type"] for e in log]
    assert "self_preservation_started" in types, types
    assert s["preservation"]["type"] == "self_preservation_started"
    shown = api.get("/dashboard/snapshot").text
    for _, token in (alice, bob, carol):
        assert token not in shown
    assert up["group_token"] not in shown


def test_the_snapshot_is_capped(api: TestClient) -> None:
    """At most RECENT_EVENTS events and HISTORY_PER_NODE entries a node, the last ones,
    however long the log."""
    a, b = new_group(api, name="a"), new_group(api, name="b")
    rover = new_node(api, "rover")
    join(api, a, rover)
    moves = HISTORY_PER_NODE + 5
    for i in range(moves):
        migrate(api, rover, b if i % 2 == 0 else a, 0.01 * i)
    for i in range(RECENT_EVENTS - moves):
        new_node(api, f"n{i}")
    log = all_events(api)
    assert len(log) > RECENT_EVENTS

    s = snapshot(api)
    assert s["recent_events"] == log[-RECENT_EVENTS:]
    assert s["last_event_id"] == log[-1]["id"]
    mine = [e for e in s["history"] if e["node_id"] == rover[0]]
    assert len(mine) == HISTORY_PER_NODE
    assert mine == [e for e in log if e["node_id"] == rover[0]][-HISTORY_PER_NODE:]
    assert s["migrations"] == moves  # counted over the whole log, not the capped part
    assert snapshot(api, recent=3)["recent_events"] == log[-3:]
    assert snapshot(api, recent=0)["recent_events"] == []
    assert api.get("/dashboard/snapshot", params={"recent": RECENT_EVENTS + 1}).status_code == 422


def test_following_from_the_cursor_yields_exactly_the_later_events(api: TestClient) -> None:
    group = new_group(api, name="g")
    for name in ("a", "b"):
        join(api, group, new_node(api, name))
    s = snapshot(api)
    later = [new_node(api, f"late{i}") for i in range(3)]
    join(api, group, later[0])

    followed = follow(api, s["last_event_id"])
    log = all_events(api)
    assert [e["type"] for e in followed] == ["node_registered"] * 3 + ["joined"]
    seen = [e["id"] for e in s["recent_events"]] + [e["id"] for e in followed]
    assert seen == [e["id"] for e in log]  # nothing lost, nothing twice, in order
    assert follow(api, log[-1]["id"]) == []


def test_an_event_logged_while_the_snapshot_is_built_reaches_the_page_once(
    api: TestClient,
) -> None:
    """A node registered between the snapshot's read of the log and its read of the state
    is in the state, not in the snapshot's events, and comes once through the stream."""
    new_node(api, "early")
    store_sources = storage_sources(lambda: api.app.state.storage)  # type: ignore[attr-defined]
    created: list[int] = []

    async def nodes_after_a_registration() -> list[dict[str, Any]]:
        if not created:
            node = await api.app.state.storage.create_node(  # type: ignore[attr-defined]
                name="racer", address=None, num_samples=1, task="digits"
            )
            created.append(node.node_id)
        return await store_sources.nodes()

    racing = dataclasses.replace(store_sources, nodes=nodes_after_a_registration)
    read = snapshot_reader(racing, state_reader(racing), per_node=HISTORY_PER_NODE)
    s = api.portal.call(read, RECENT_EVENTS)
    assert created and created[0] in {n.node_id for n in s.nodes}
    assert [e.type for e in s.recent_events] == ["node_registered"]
    followed = follow(api, s.last_event_id)
    assert [(e["type"], e["node_id"]) for e in followed] == [("node_registered", created[0])]
    assert [e.id for e in s.recent_events] + [e["id"] for e in followed] == [
        e["id"] for e in all_events(api)
    ]


def test_the_cap_is_one_number_for_the_page_the_route_and_the_docs() -> None:
    """The page's event list holds as many rows as a snapshot sends, and docs/dashboard.md
    states that default."""
    script = (STATIC / "dashboard.js").read_text()
    rows = re.search(r"const FEED_ROWS = (\d+);", script)
    assert rows is not None and int(rows.group(1)) == RECENT_EVENTS
    doc = (ROOT / "docs" / "dashboard.md").read_text()
    assert f"by default and at most **{RECENT_EVENTS}**, `RECENT_EVENTS`" in doc
    assert f"last {HISTORY_PER_NODE} history entries (`HISTORY_PER_NODE`)" in doc


class Recording:
    """A sqlite3 connection that keeps every statement run on it (to explain them)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        self.statements.append((sql, params))
        return self.conn.execute(sql, params)


def test_the_digest_reads_index_ranges_not_the_whole_log(tmp_path: Path) -> None:
    """Every statement of the log digest reads the log's end or ranges of its indexes
    (SQLite's query plans), never the log by id or whole: opening the page does not cost
    the log's age."""
    db = tmp_path / "registry.db"
    with registry_app(db) as api:
        group = new_group(api, name="g")
        nodes = [new_node(api, f"n{i}") for i in range(3)]
        for node in nodes:
            join(api, group, node)
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        recording = Recording(conn)
        digest = select_log_digest(recording, 0.0, RECENT_EVENTS, HISTORY_PER_NODE)  # type: ignore[arg-type]
        assert digest.last_id == 7 and len(digest.history) == 6
        assert len(recording.statements) >= 6
        for sql, params in recording.statements:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            # The log's last id, and its last events by id, are reads of its end.
            tail = sql.startswith("SELECT COALESCE(MAX(id)") or sql.endswith(
                "FROM events WHERE id <= ? ORDER BY id DESC LIMIT ?"
            )
            reads = [step for step in plan if re.match(r"(SCAN|SEARCH) (events|e|x)\b", step)]
            assert reads, (sql, plan)
            assert tail or all("INDEX events_" in step for step in reads), (sql, plan)
