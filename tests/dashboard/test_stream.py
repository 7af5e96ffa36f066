"""The event stream: EventFeed on an in-memory log, then GET /events/stream on the real
registry (uvicorn subprocess): order, resume from Last-Event-ID, slow clients, shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from mycelium.dashboard.stream import EventFeed, FeedConfig, FeedItem
from mycelium.procs import wait_for
from tests.conftest import register_node, start_registry

FAST = FeedConfig(poll_interval=0.01, state_interval=0.05, page_size=50)
DEADLINE_S = 5.0


class MemoryLog:
    """An events log in memory with the registry's read contract (ids from 1, ascending)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {"groups": [], "nodes": []}
        self.reads = 0

    def append(self, n: int = 1) -> None:
        for _ in range(n):
            self.events.append({"id": len(self.events) + 1, "type": "joined", "data": {}})

    async def events_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        self.reads += 1
        return [e for e in self.events if e["id"] > after][:limit]

    async def read_state(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.state))


def feed_on(log: MemoryLog) -> EventFeed:
    return EventFeed(log.events_after, log.read_state, FAST)


async def take(items: AsyncIterator[FeedItem], kinds: set[str], count: int) -> list[FeedItem]:
    """The next ``count`` items of the given kinds (others skipped), within the deadline."""
    got: list[FeedItem] = []

    async def collect() -> None:
        async for item in items:
            if item.kind in kinds:
                got.append(item)
                if len(got) == count:
                    return

    await asyncio.wait_for(collect(), DEADLINE_S)
    return got


def ids(items: list[FeedItem]) -> list[int]:
    return [i.data["id"] for i in items]


# -- EventFeed ---------------------------------------------------------------------------------


def test_catch_up_in_log_order_over_many_pages_then_live_events() -> None:
    async def run() -> None:
        log = MemoryLog()
        log.append(175)  # 3.5 pages
        feed = feed_on(log)
        follower = feed.follow(0)
        first = await take(follower, {"event", "caught-up"}, 176)
        assert ids(first[:-1]) == list(range(1, 176))
        assert first[-1].kind == "caught-up" and first[-1].data == {"id": 175}
        log.append(3)
        live = await take(follower, {"event"}, 3)
        assert ids(live) == [176, 177, 178]
        await follower.aclose()
        assert feed.clients == 0

    asyncio.run(run())


def test_resume_after_an_id_sends_only_later_events() -> None:
    async def run() -> None:
        log = MemoryLog()
        log.append(10)
        follower = feed_on(log).follow(7)
        got = await take(follower, {"event", "caught-up"}, 4)
        assert ids(got[:3]) == [8, 9, 10] and got[3].kind == "caught-up"
        await follower.aclose()

    asyncio.run(run())


def test_resume_from_an_id_the_log_never_had_restarts_from_the_first_event() -> None:
    async def run() -> None:
        log = MemoryLog()
        log.append(3)
        follower = feed_on(log).follow(99)
        got = await take(follower, {"event", "reset", "caught-up"}, 5)
        assert [i.kind for i in got] == ["reset", "event", "event", "event", "caught-up"]
        assert ids(got[1:4]) == [1, 2, 3]
        await follower.aclose()

    asyncio.run(run())


def test_a_stalled_client_does_not_hold_up_another() -> None:
    async def run() -> None:
        log = MemoryLog()
        log.append(5)
        feed = feed_on(log)
        stalled = feed.follow(0)
        assert (await anext(stalled)).data["id"] == 1  # then never read again
        fast = feed.follow(0)
        await take(fast, {"caught-up"}, 1)
        log.append(200)
        got = await take(fast, {"event"}, 200)
        assert ids(got) == list(range(6, 206))
        assert feed.clients == 2
        await stalled.aclose()
        await fast.aclose()
        assert feed.clients == 0

    asyncio.run(run())


def test_state_is_sent_when_it_changed_and_not_again_while_it_did_not() -> None:
    async def run() -> None:
        log = MemoryLog()
        log.state = {"groups": [{"group_id": 1, "round": 1}], "nodes": []}
        follower = feed_on(log).follow(0)
        first = await take(follower, {"state"}, 1)
        assert first[0].data["groups"][0]["round"] == 1
        log.append(1)  # an event, state unchanged: the next item is the event, no state
        nxt = await take(follower, {"event", "state"}, 1)
        assert nxt[0].kind == "event"
        log.state = {"groups": [{"group_id": 1, "round": 2}], "nodes": []}
        second = await take(follower, {"state"}, 1)
        assert second[0].data["groups"][0]["round"] == 2
        await follower.aclose()

    asyncio.run(run())


def test_no_client_no_polling_and_close_ends_followers() -> None:
    async def run() -> None:
        log = MemoryLog()
        feed = feed_on(log)
        await asyncio.sleep(0.1)
        assert log.reads == 0  # nobody follows: the log is not read
        follower = feed.follow(0)
        await take(follower, {"caught-up"}, 1)
        await feed.close()
        rest = [item async for item in follower]
        assert all(i.kind == "state" for i in rest)
        assert feed.clients == 0

    asyncio.run(run())


# -- GET /events/stream on the real registry -----------------------------------------------------


def sse(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Messages of a text/event-stream response (fields of each; comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")


def logged(messages: Iterator[dict[str, str]], until_caught_up: bool = True) -> list[int]:
    """Ids of the logged events up to the caught-up marker."""
    seen = []
    for m in messages:
        if m.get("event") == "caught-up" and until_caught_up:
            return seen
        if "id" in m:
            assert json.loads(m["data"])["id"] == int(m["id"])
            seen.append(int(m["id"]))
    return seen


def next_logged(messages: Iterator[dict[str, str]]) -> dict[str, Any]:
    for m in messages:
        if "id" in m:
            return json.loads(m["data"])
    raise AssertionError("stream ended")


def test_stream_order_and_resume_with_last_event_id(tmp_path: Path) -> None:
    with start_registry(tmp_path) as (url, _), httpx.Client(base_url=url, timeout=10) as http:
        for i in range(6):
            register_node(url, name=f"n{i}", http=http)
        expected = [e["id"] for e in http.get("/events", params={"limit": 1000}).json()["events"]]
        with http.stream("GET", "/events/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith(
                "text/event-stream"
            )
            messages = sse(r)
            assert logged(messages) == expected
            register_node(url, name="live", http=http)
            live = next_logged(messages)
            assert live["type"] == "node_registered" and live["data"]["name"] == "live"
        resume = {"Last-Event-ID": str(expected[2])}
        with http.stream("GET", "/events/stream", params={"after": 1}, headers=resume) as r:
            assert logged(sse(r)) == [*expected[3:], live["id"]]  # the header wins over ?after
        assert http.get("/events/stream", headers={"Last-Event-ID": "x"}).status_code == 422


def open_streams(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("mycelium_dashboard_streams "):
            return float(line.split()[1])
    raise AssertionError("no mycelium_dashboard_streams in /metrics")


def test_a_client_that_stops_reading_does_not_block_others(tmp_path: Path) -> None:
    """A client that never reads its stream while the log grows: another client still gets
    every event, and a live one at once. (Here the kernel's socket buffers may absorb what
    the stalled client is sent; a consumer that does not advance at all is the feed test
    above.)"""
    with start_registry(tmp_path) as (url, _), httpx.Client(base_url=url, timeout=10) as http:
        port = int(url.rsplit(":", 1)[1])
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            for i in range(600):
                http.post("/nodes", json={"name": f"node-{i:04d}-" + "x" * 60, "num_samples": 1})
            started = time.monotonic()
            with http.stream("GET", "/events/stream") as r:
                messages = sse(r)
                assert logged(messages) == list(range(1, 601))
                register_node(url, name="after", http=http)
                assert next_logged(messages)["data"]["name"] == "after"
                took = time.monotonic() - started
                assert open_streams(http) == 2
            assert took < 20, f"the second client took {took:.1f} s"
            wait_for(lambda: open_streams(http) == 1, timeout=DEADLINE_S, what="one stream left")
        finally:
            stalled.close()


def test_registry_stops_promptly_with_a_stream_open(tmp_path: Path) -> None:
    """uvicorn would wait its 5 s graceful timeout for an open stream; the registry's
    server ends the streams first."""
    with start_registry(tmp_path) as (url, proc), httpx.Client(base_url=url, timeout=10) as http:
        with http.stream("GET", "/events/stream") as r:
            next(r.iter_lines())
            started = time.monotonic()
            proc.stop(timeout=15)
            took = time.monotonic() - started
    assert took < 4.0, f"stopping took {took:.1f} s"
    assert "timeout graceful shutdown exceeded" not in proc.read_log()
