"""Putting the dashboard into a registry app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from mycelium.dashboard.metrics import Metrics, MetricsMiddleware
from mycelium.dashboard.models import HISTORY_PER_NODE
from mycelium.dashboard.routes import STREAM_PATH, dashboard_router
from mycelium.dashboard.sources import Sources, snapshot_reader, state_reader
from mycelium.dashboard.stream import EventFeed, FeedConfig


@dataclass(frozen=True)
class Dashboard:
    feed: EventFeed
    metrics: Metrics


def install_dashboard(
    app: FastAPI, sources: Sources, *, feed_config: FeedConfig | None = None
) -> Dashboard:
    """Add the dashboard, the event stream and /metrics to ``app`` (before it starts).

    The metrics middleware goes outermost, so it times every layer of a request. The
    feed is reopened by the app's lifespan and closed when it ends.
    """
    read_state = state_reader(sources)
    feed = EventFeed(sources.events_after, read_state, feed_config)
    metrics = Metrics(streams=lambda: feed.clients)
    read_snapshot = snapshot_reader(sources, read_state, per_node=HISTORY_PER_NODE)
    app.include_router(
        dashboard_router(feed=feed, metrics=metrics, sources=sources, read_snapshot=read_snapshot)
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, untimed=frozenset({STREAM_PATH}))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            feed.open()
            try:
                yield state
            finally:
                await feed.close()

    app.router.lifespan_context = lifespan
    dashboard = Dashboard(feed=feed, metrics=metrics)
    app.state.dashboard = dashboard
    return dashboard
