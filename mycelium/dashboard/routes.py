"""The dashboard's routes: the page and its files, its snapshot, the event stream, the metrics.

Everything here is read-only and public: the page, the snapshot and the stream carry the
same public fields as ``GET /groups`` and ``GET /nodes`` (no token, no invite code), and the
page's Content-Security-Policy allows only its own files and same-origin requests. All URLs
in the page are relative, so it works behind TLS and under a path prefix.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from mycelium.dashboard.metrics import CONTENT_TYPE, Metrics, process_identity
from mycelium.dashboard.models import RECENT_EVENTS, Snapshot
from mycelium.dashboard.sources import Sources
from mycelium.dashboard.stream import EventFeed, FeedItem

STATIC = Path(__file__).resolve().parent / "static"
STREAM_PATH = "/events/stream"
SNAPSHOT_PATH = "/dashboard/snapshot"
EVENT_ID_MAX = 2**63 - 1
RETRY_MS = 2000
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# The only files served under /dashboard/static/ (no path from the request reaches the disk).
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "cytoscape.min.js": "text/javascript",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "favicon.svg": "image/svg+xml",
    "LICENSE.cytoscape.txt": "text/plain",
    "LICENSE.uplot.txt": "text/plain",
}


def dashboard_router(
    *,
    feed: EventFeed,
    metrics: Metrics,
    sources: Sources,
    read_snapshot: Callable[[int], Awaitable[Snapshot]],
) -> APIRouter:
    router = APIRouter()
    _page_routes(router)

    @router.get(SNAPSHOT_PATH, response_model=Snapshot)
    async def snapshot(
        recent: Annotated[int, Query(ge=0, le=RECENT_EVENTS)] = RECENT_EVENTS,
    ) -> Snapshot:
        """What the page opens from: groups, nodes and what it shows of the events log
        (the last ``recent`` events, node histories, the migration count, the
        self-preservation mark), up to ``last_event_id``; then it follows
        ``GET /events/stream?after=last_event_id``, which sends exactly the later events."""
        return await read_snapshot(recent)

    @router.get(STREAM_PATH, response_class=EventSourceResponse)
    async def event_stream(
        after: Annotated[int, Query(ge=0, le=EVENT_ID_MAX)] = 0,
        last_event_id: Annotated[int | None, Header(ge=0, le=EVENT_ID_MAX)] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events: the events log after ``after`` (or after the
        ``Last-Event-ID`` header, which a reconnecting browser sends), then live events.

        Each logged event is a message with ``id`` = its log id and ``data`` = the event as
        in ``GET /events``. Named messages: ``caught-up`` (the log is read to its end),
        ``state`` (groups and nodes, public fields, whenever they changed) and ``reset``
        (the resume id is not in the log; the stream restarts from the first event).
        """
        yield ServerSentEvent(retry=RETRY_MS, comment="mycelium events")
        async for item in feed.follow(last_event_id if last_event_id is not None else after):
            yield _message(item)

    metrics_doc: dict[int | str, dict[str, Any]] = {
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}
    }

    @router.get("/metrics", response_class=Response, responses=metrics_doc)
    async def prometheus_metrics() -> Response:
        """Prometheus text format: network gauges, request counters and latency histograms."""
        who = process_identity()
        return Response(
            await metrics.render(sources.stats),
            media_type=CONTENT_TYPE,
            headers={"X-Registry-Process": f"{who['host']}:{who['pid']}"},
        )

    return router


def _message(item: FeedItem) -> ServerSentEvent:
    data = json.dumps(item.data)
    if item.kind == "event":
        return ServerSentEvent(id=str(item.data["id"]), raw_data=data)
    return ServerSentEvent(event=item.kind, raw_data=data)


def _page_routes(router: APIRouter) -> None:
    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("dashboard", status_code=307)

    @router.get("/dashboard", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)

    @router.get("/dashboard/static/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise HTTPException(404, f"no dashboard file {name!r}")
        return FileResponse(STATIC / name, media_type=media_type, headers=SECURITY_HEADERS)
