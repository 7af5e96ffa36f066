"""The append-only event log, and the health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mycelium import api
from mycelium.registry.deps import StoreDep

router = APIRouter(tags=["events"])


@router.get("/events", response_model=api.EventPage)
async def events(
    store: StoreDep,
    since: api.Count = 0,
    limit: api.Limit = 100,
) -> Any:
    """The append-only event log, oldest first, ids greater than ``since``."""
    page = await store.events(since=since, limit=limit)
    next_since = page[-1]["id"] if page else since
    return {"events": page, "next_since": next_since}


@router.get("/health", response_model=api.Health, tags=["health"])
async def health(store: StoreDep) -> Any:
    """``self_preservation``: the registry holds expiry (docs/architecture.md). The header
    ``X-Registry-Sweeping`` says whether this process runs the liveness sweep (one of the
    processes sharing a PostgreSQL database does). 503 when the database (PostgreSQL) does
    not answer, with the body every other route gives then."""
    await store.check()
    return JSONResponse(
        {"status": "ok", "self_preservation": store.preserving},
        headers={"X-Registry-Sweeping": "1" if store.sweeping else "0"},
    )
