"""The registry app: factory, lifespan (store + liveness sweeper) and the HTTP mapping of
store refusals. The one place the app is composed: the API's routers and the dashboard,
whose readers are made here over the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mycelium.api import INT64_MAX, UINT64_MAX
from mycelium.dashboard.install import install_dashboard
from mycelium.dashboard.sources import LogDigest, NetworkStats, Row, Sources
from mycelium.registry.deps import Unauthorized
from mycelium.registry.middleware import BodyRules
from mycelium.registry.routers import events, groups, models, nodes
from mycelium.registry.settings import Settings
from mycelium.registry.store import (
    ConflictError,
    ForbiddenError,
    LimitError,
    NotFoundError,
    RegistryStore,
    StoreError,
    StoreUnavailable,
    database,
    hash_secret,
    make_store,
)
from mycelium.registry.store.liveness import Preservation

DASHBOARD_MAX_GROUPS = 10_000  # groups the dashboard reads, dead ones too
STATUS: dict[type[StoreError], int] = {
    NotFoundError: 404,
    ForbiddenError: 403,
    ConflictError: 409,
    LimitError: 429,
}
"""HTTP status of each store refusal (any other :class:`StoreError` is a 400)."""


def create_app(settings: Settings) -> FastAPI:
    """The registry app; the lifespan opens the store and runs the liveness sweeper."""
    app = FastAPI(
        title="Mycelium Net registry",
        version="1.0",
        description="The DNS of learning groups: nodes, groups, membership, models, events. "
        "Live view: [dashboard](dashboard); Prometheus metrics: [metrics](metrics).",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.discovery_json = groups.JsonCache()
    app.add_middleware(BodyRules, model_limit=settings.max_model_bytes)
    _add_error_handlers(app)
    for module in (nodes, groups, models, events):
        _add_routes(app, module.router)
    install_dashboard(app, storage_sources(lambda: app.state.storage))
    app.openapi = _exact_openapi(app)  # type: ignore[method-assign]
    return app


def storage_sources(get_storage: Callable[[], RegistryStore]) -> Sources:
    """The dashboard's readers over the store that ``get_storage()`` returns when they are
    called (the store is opened by the app's lifespan, after the routes are made)."""

    async def events_after(after: int, limit: int) -> list[Row]:
        return await get_storage().events(since=after, limit=limit)

    async def groups() -> list[Row]:
        return await get_storage().list_groups(
            task=None,
            has_capacity=None,
            limit=DASHBOARD_MAX_GROUPS,
            offset=0,
            include_dead=True,
        )

    async def nodes() -> list[Row]:
        return await get_storage().list_nodes(group_id=None, alive=None)

    async def stats() -> NetworkStats:
        return await get_storage().stats()

    async def log_digest(recent: int, per_node: int) -> LogDigest:
        return await get_storage().log_digest(recent=recent, per_node=per_node)

    return Sources(
        events_after=events_after, groups=groups, nodes=nodes, stats=stats, log_digest=log_digest
    )


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add a resource's routes to the app as they are, not with ``include_router``.

    FastAPI 0.138 keeps an included router as a branch that every request walks twice
    (to match, then to handle): measured at about 25% more CPU per heartbeat (in-process,
    150 -> 200 us). The routers carry their prefix and tags themselves and nothing is set
    at inclusion, so their APIRoutes are complete as they stand.
    """
    app.router.routes.extend(router.routes)


def _exact_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI with integer bounds as exact integers.

    FastAPI's OpenAPI model types ``minimum``/``maximum`` as floats, which turns 2^63 - 1
    into 2^63 (and 2^64 - 1 into 2^64): a client or a fuzzer reading the schema would send
    one value past what the API accepts.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _exact_integer_bounds(generate())
        return app.openapi_schema

    return openapi


_EXACT = {float(INT64_MAX): INT64_MAX, float(UINT64_MAX): UINT64_MAX}


def _exact_integer_bounds(node: Any) -> Any:
    if isinstance(node, list):
        for item in node:
            _exact_integer_bounds(item)
    elif isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum"):
                if isinstance(node.get(key), float):
                    node[key] = _EXACT.get(node[key], int(node[key]))
        for value in node.values():
            _exact_integer_bounds(value)
    return node


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    db = settings.db_path
    store = make_store(
        db if isinstance(db, Path) else database(db),
        node_ttl=settings.node_ttl,
        group_ttl=settings.group_ttl,
        clock=settings.clock,
        flush_interval=settings.flush_interval,
        operator_token_hash=hash_secret(token) if (token := settings.operator_token) else None,
        max_groups_per_node=settings.max_groups_per_node,
        preservation=Preservation(
            threshold=settings.self_preservation_threshold,
            max_s=settings.self_preservation_max_s,
        ),
    )
    await store.open()
    app.state.storage = store
    sweeper = asyncio.create_task(store.sweep_forever(settings.sweep_interval))
    try:
        yield
    finally:
        sweeper.cancel()
        with suppress(asyncio.CancelledError):
            await sweeper
        await store.close()


def error_detail(exc: StoreError) -> Any:
    """A message; a conflict also carries the node's actual group to resynchronise with."""
    if isinstance(exc, ConflictError):
        return {"message": exc.message, "group_id": exc.group_id}
    return exc.message


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreError)
    async def refused(request: Request, exc: StoreError) -> JSONResponse:
        status = STATUS.get(type(exc), 400)
        return JSONResponse({"detail": error_detail(exc)}, status_code=status)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # The database (PostgreSQL) is out of reach: nothing was changed; retry later.
        body = {"detail": f"registry database unavailable: {exc}; retry later"}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input, which fails to encode for NaN/inf (a 500).
        errors = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.message},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
