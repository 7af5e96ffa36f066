"""Putting the dashboard into a registry app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from mycelium.dashboard.metrics import Metrics, MetricsMiddleware
from mycelium.dashboard.routes import STREAM_PATH, dashboard_router
from mycelium.dashboard.sources import Sources, state_reader
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
    feed = EventFeed(sources.events_after, state_reader(sources), feed_config)
    metrics = Metrics(streams=lambda: feed.clients)
    app.include_router(dashboard_router(feed=feed, metrics=metrics, sources=sources))
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
