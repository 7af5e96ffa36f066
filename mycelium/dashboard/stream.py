"""The live feed behind ``GET /events/stream``: the events log, followed for many clients.

One :class:`EventFeed` per app. Each client follows the log from its own cursor (its
``Last-Event-ID``): it reads the log in pages until it is caught up, then waits for the
log's head to move. One poller task, running only while a client is connected, reads
after the head every ``poll_interval`` and wakes the clients; it also reads the network
state (groups and nodes, which change through rounds and heartbeats that are not events)
and hands it out when it changed.

Nothing is pushed into a client: a client pulls from the log at its own pace, so a slow
client holds up only itself, and a reconnecting one loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

Row = dict[str, Any]
EventsAfter = Callable[[int, int], Awaitable[list[Row]]]
StateReader = Callable[[], Awaitable[Row]]


@dataclass(frozen=True)
class FeedConfig:
    poll_interval: float = 0.5
    """Seconds between reads after the log's head while a client is connected."""
    state_interval: float = 2.0
    """Seconds between reads of the network state (at least 20x the time a read took)."""
    page_size: int = 500
    """Events per read of the log."""


@dataclass(frozen=True)
class FeedItem:
    """What a client is sent: a logged event, the network state, or a marker."""

    kind: Literal["event", "state", "caught-up", "reset"]
    data: Row


class EventFeed:
    """Follows the events log for any number of clients (see the module docstring)."""

    def __init__(
        self,
        events_after: EventsAfter,
        read_state: StateReader,
        config: FeedConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events_after = events_after
        self._read_state = read_state
        self.config = config or FeedConfig()
        self._clock = clock
        self._clients = 0
        self._head: int | None = None
        self._state: Row | None = None
        self._state_version = 0
        self._changed: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def clients(self) -> int:
        """Clients following the feed now."""
        return self._clients

    async def follow(self, after: int) -> AsyncIterator[FeedItem]:
        """Events with ids greater than ``after`` in log order, then live ones, with the
        network state whenever it changed; ends when the feed is closed."""
        self._attach()
        try:
            async for item in self._follow(after):
                yield item
        finally:
            self._detach()

    async def _follow(self, after: int) -> AsyncIterator[FeedItem]:
        cursor, state_seen, caught_up = after, 0, False
        while not self._closed:
            batch = await self._events_after(cursor, self.config.page_size)
            for event in batch:
                yield FeedItem("event", event)
                cursor = event["id"]
            if len(batch) >= self.config.page_size:
                continue
            if not caught_up:
                if not batch and not await self._exists(cursor):
                    yield FeedItem("reset", {"unknown_id": cursor})
                    cursor = 0
                    continue
                caught_up = True
                yield FeedItem("caught-up", {"id": cursor})
            self._saw(cursor)  # a short page: the log ended at cursor when it was read
            if self._state is not None and self._state_version != state_seen:
                state_seen = self._state_version
                yield FeedItem("state", self._state)
                continue
            await self._wait(cursor, state_seen)

    async def _exists(self, event_id: int) -> bool:
        """Whether ``event_id`` is in the log (0, "before the first", always is)."""
        if event_id == 0:
            return True
        found = await self._events_after(event_id - 1, 1)
        return bool(found) and found[0]["id"] == event_id

    def _saw(self, event_id: int) -> None:
        """``event_id`` is in the log (or 0), so the head is at least there."""
        if self._head is None or event_id > self._head:
            self._head = event_id

    async def _wait(self, cursor: int, state_seen: int) -> None:
        changed = self._changed
        if changed is None or self._closed:
            return
        ahead = self._head is not None and self._head > cursor
        if ahead or self._state_version != state_seen:
            return
        await changed.wait()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    # -- the poller: runs while a client is attached ------------------------------------

    def _attach(self) -> None:
        self._clients += 1
        if self._poller is None:
            self._changed = asyncio.Event()
            self._poller = asyncio.create_task(self._poll_forever(), name="event-feed")

    def _detach(self) -> None:
        self._clients -= 1
        if self._clients == 0 and self._poller is not None:
            self._poller.cancel()
            self._poller = None
            self._changed = None
            self._state = None  # may be stale by the time a client comes back

    async def _poll_forever(self) -> None:
        next_state = self._clock()
        while True:
            try:
                changed = await self._poll_log()
                if self._clock() >= next_state:
                    started = self._clock()
                    changed = await self._poll_state() or changed
                    took = self._clock() - started
                    next_state = self._clock() + max(self.config.state_interval, 20 * took)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed read may heal (database busy): log and go on
                logger.exception("event feed: reading the registry failed; will retry")
                changed = False
            if changed:
                self._wake()
            await asyncio.sleep(self.config.poll_interval)

    async def _poll_log(self) -> bool:
        if self._head is None:
            return False
        new = await self._events_after(self._head, self.config.page_size)
        if new:
            self._saw(new[-1]["id"])
        return bool(new)

    async def _poll_state(self) -> bool:
        state = await self._read_state()
        if state == self._state:
            return False
        self._state = state
        self._state_version += 1
        return True

    def open(self) -> None:
        """Accept followers (again): the app started."""
        self._closed = False

    async def close(self) -> None:
        """End every follower (server shutdown) and stop the poller."""
        self._closed = True
        self._wake()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
