"""The global registry of learning groups: a FastAPI app over :mod:`mycelium.storage`.

Routes are thin: they validate input (pydantic), pull the Bearer token and hand over to the
storage backend, whose refusals (:class:`mycelium.storage.StorageError`) become 4xx answers.
This module imports neither torch nor flwr.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from mycelium import schemas
from mycelium.dashboard.install import StreamClosingServer, install_dashboard
from mycelium.dashboard.sources import storage_sources
from mycelium.storage import (
    GroupSpec,
    Heartbeat,
    Model,
    RoundReport,
    SqliteStorage,
    Storage,
    StorageError,
)

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
JSON_BODY_LIMIT = MiB
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ModelT = TypeVar("ModelT", bound=BaseModel)


class RegistryStartError(Exception):
    """The registry could not start (port taken, database not usable)."""


@dataclass(frozen=True)
class Settings:
    db_path: Path
    node_ttl: float = 90.0
    group_ttl: float = 120.0
    max_model_mb: float = 64.0
    sweep_interval: float = 1.0
    flush_interval: float = 0.2
    clock: Callable[[], float] = time.time

    @property
    def max_model_bytes(self) -> int:
        return int(self.max_model_mb * MiB)


# -- request size limit -------------------------------------------------------------------


class BodyLimit:
    """Refuse bodies over 1 MiB (over ``model_limit`` for model uploads) with 413.

    A declared Content-Length is checked up front; a chunked body is read up to the limit.
    """

    def __init__(self, app: ASGIApp, *, model_limit: int) -> None:
        self.app = app
        self.model_limit = model_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.model_limit if scope["path"].endswith("/model") else JSON_BODY_LIMIT
        length = _content_length(scope)
        if length is not None:
            if length > limit:
                await _too_large(send, limit)
                return
            await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _too_large(send, limit)
                return
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body)}]), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message]) -> Receive:
    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    return receive


async def _too_large(send: Send, limit: int) -> None:
    response = JSONResponse(
        {"detail": f"request body is larger than the limit of {limit} bytes"}, status_code=413
    )
    await response({"type": "http"}, _replay([]), send)


# -- dependencies ----------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A node token or a group token.")


# Dependencies are ``async def``: FastAPI runs plain ``def`` ones in a thread pool, which
# measured at a third of the heartbeat throughput.
async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


async def optional_token(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return creds.credentials if creds is not None else None


async def require_token(token: Annotated[str | None, Depends(optional_token)]) -> str:
    if not token:
        raise _Unauthorized()
    return token


class _Unauthorized(Exception):
    """No ``Authorization: Bearer`` header: 401."""


StorageDep = Annotated[Storage, Depends(get_storage)]
TokenDep = Annotated[str, Depends(require_token)]


# -- app -------------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The registry app; the lifespan opens the storage and runs the liveness sweeper."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = SqliteStorage(
            settings.db_path,
            node_ttl=settings.node_ttl,
            group_ttl=settings.group_ttl,
            clock=settings.clock,
            flush_interval=settings.flush_interval,
        )
        await storage.open()
        app.state.storage = storage
        sweeper = asyncio.create_task(_sweep_forever(storage, settings.sweep_interval))
        try:
            yield
        finally:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
            await storage.close()

    app = FastAPI(
        title="Mycelium Net registry",
        version="1.0",
        description="The DNS of learning groups: nodes, groups, membership, models, events. "
        "Live view: [dashboard](dashboard); Prometheus metrics: [metrics](metrics).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimit, model_limit=settings.max_model_bytes)
    _add_error_handlers(app)
    _add_node_routes(app)
    _add_group_routes(app, settings)
    _add_misc_routes(app)
    install_dashboard(app, storage_sources(lambda: app.state.storage))
    return app


async def _sweep_forever(storage: Storage, interval: float) -> None:
    while True:
        try:
            await storage.sweep()
        except sqlite3.Error:
            logger.exception("liveness sweep failed; will retry")
        await asyncio.sleep(interval)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input, which fails to encode for NaN/inf (a 500).
        errors = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(_Unauthorized)
    async def unauthorized(request: Request, exc: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"detail": "missing 'Authorization: Bearer <token>' header"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut} for code in (400, 401, 403, 404, 409, 413)
}


def _add_node_routes(app: FastAPI) -> None:
    @app.post("/nodes", status_code=201, response_model=schemas.NodeCreated, responses=ERRORS)
    async def register_node(body: schemas.NodeCreate, storage: StorageDep) -> Any:
        """Register a node; keep the token, it authenticates every write about this node."""
        created = await storage.create_node(
            name=body.name, address=body.address, num_samples=body.num_samples, task=body.task
        )
        return {"node_id": created.node_id, "token": created.token}

    @app.get("/nodes", response_model=list[schemas.NodePublic])
    async def list_nodes(
        storage: StorageDep, group_id: int | None = None, alive: bool | None = None
    ) -> Any:
        return await storage.list_nodes(group_id=group_id, alive=alive)

    @app.get("/nodes/{node_id}", response_model=schemas.NodePublic, responses=ERRORS)
    async def get_node(node_id: int, storage: StorageDep) -> Any:
        return await storage.get_node(node_id=node_id)

    @app.delete("/nodes/{node_id}", status_code=204, responses=ERRORS)
    async def delete_node(node_id: int, storage: StorageDep, token: TokenDep) -> Response:
        """Leave the network: frees the node's group slot; its token stops working."""
        await storage.delete_node(node_id=node_id, token=token)
        return Response(status_code=204)

    @app.post(
        "/nodes/{node_id}/heartbeat",
        response_model=schemas.HeartbeatOut,
        responses=ERRORS,
        openapi_extra={
            "requestBody": _json_body(schemas.HeartbeatIn),
            "security": [{"HTTPBearer": []}],
        },
    )
    async def heartbeat(node_id: int, request: Request) -> Any:
        """Report liveness and metrics; 409 (with the actual group) if group_id is wrong.

        The hottest write: body and token are read with one pydantic call each instead of
        FastAPI's dependency path (HeartbeatIn documents the body).
        """
        token = _bearer_token(request)
        body = _parse_body(schemas.HeartbeatIn, await request.body())
        beat = Heartbeat(node_id=node_id, **body.model_dump())
        group_id = await request.app.state.storage.heartbeat(beat=beat, token=token)
        return JSONResponse({"node_id": node_id, "group_id": group_id, "alive": True})

    @app.post("/nodes/{node_id}/migrate", response_model=schemas.MigrateOut, responses=ERRORS)
    async def migrate(
        node_id: int, body: schemas.MigrateIn, storage: StorageDep, token: TokenDep
    ) -> Any:
        """Leave the current group and join another in one transaction."""
        from_group = await storage.migrate(
            node_id=node_id,
            token=token,
            to_group_id=body.to_group_id,
            invite_code=body.invite_code,
            reason=body.reason,
            expected_gain=body.expected_gain,
        )
        return {"node_id": node_id, "from_group_id": from_group, "to_group_id": body.to_group_id}


def _add_group_routes(app: FastAPI, settings: Settings) -> None:
    @app.post("/groups", status_code=201, response_model=schemas.GroupCreated, responses=ERRORS)
    async def create_group(
        body: schemas.GroupCreate,
        storage: StorageDep,
        token: Annotated[str | None, Depends(optional_token)],
    ) -> Any:
        """Create a group (node token, or none for an operator); the creator is not a member."""
        spec = GroupSpec(**body.model_dump())
        created = await storage.create_group(spec=spec, token=token)
        return {
            "group_id": created.group_id,
            "group_token": created.group_token,
            "invite_code": created.invite_code,
        }

    json_cache: dict[tuple[Any, ...], tuple[list[dict[str, Any]], bytes]] = {}

    @app.get(
        "/groups",
        response_model=list[schemas.GroupPublic],
        openapi_extra={"parameters": _query_parameters(schemas.GroupQuery)},
    )
    async def list_groups(request: Request, storage: StorageDep) -> Any:
        """Live groups, best accuracy first (none last), then most live members.

        The hottest read: its query is validated with one pydantic call instead of FastAPI's
        per-parameter path, and the JSON of an unchanged answer is reused.
        """
        try:
            query = schemas.GroupQuery.model_validate(request.query_params)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]
            ) from None
        groups = await storage.list_groups(**query.model_dump())
        key = tuple(query.model_dump().values())
        cached = json_cache.get(key)
        if cached is None or cached[0] is not groups:
            if len(json_cache) > 256:
                json_cache.clear()
            cached = (groups, json.dumps(groups).encode())
            json_cache[key] = cached
        return Response(cached[1], media_type="application/json")

    @app.get("/groups/{group_id}", response_model=schemas.GroupDetail, responses=ERRORS)
    async def get_group(group_id: int, storage: StorageDep) -> Any:
        return await storage.get_group(group_id=group_id)

    @app.post("/groups/{group_id}/join", response_model=schemas.MembershipOut, responses=ERRORS)
    async def join(
        group_id: int, body: schemas.JoinIn, storage: StorageDep, token: TokenDep
    ) -> Any:
        """Join with the node's token; 409 when full, 403 without a valid invite."""
        await storage.join(
            group_id=group_id,
            node_id=body.node_id,
            token=token,
            invite_code=body.invite_code,
            flower_node_id=body.flower_node_id,
        )
        return {"group_id": group_id, "node_id": body.node_id}

    @app.post("/groups/{group_id}/leave", response_model=schemas.MembershipOut, responses=ERRORS)
    async def leave(
        group_id: int, body: schemas.LeaveIn, storage: StorageDep, token: TokenDep
    ) -> Any:
        await storage.leave(group_id=group_id, node_id=body.node_id, token=token)
        return {"group_id": None, "node_id": body.node_id}

    @app.post("/groups/{group_id}/heartbeat", responses=ERRORS)
    async def group_heartbeat(
        group_id: int, storage: StorageDep, token: TokenDep
    ) -> dict[str, Any]:
        """The group's coordinator is alive (group token)."""
        await storage.group_heartbeat(group_id=group_id, token=token)
        return {"group_id": group_id, "alive": True}

    @app.delete("/groups/{group_id}", status_code=204, responses=ERRORS)
    async def close_group(group_id: int, storage: StorageDep, token: TokenDep) -> Response:
        """The group's host stops the group (group token): it is dissolved at once and its
        members are detached (events ``evicted``, ``dissolved``) so they re-home."""
        await storage.close_group(group_id=group_id, token=token)
        return Response(status_code=204)

    @app.post("/groups/{group_id}/rounds", status_code=201, responses=ERRORS)
    async def report_round(
        group_id: int, body: schemas.RoundIn, storage: StorageDep, token: TokenDep
    ) -> dict[str, Any]:
        """Record a finished round's metrics (group token)."""
        report = RoundReport(**body.model_dump())
        await storage.report_round(group_id=group_id, token=token, report=report)
        return {"group_id": group_id, "round": body.round}

    _add_model_routes(app, settings)


def _add_model_routes(app: FastAPI, settings: Settings) -> None:
    @app.put("/groups/{group_id}/model", status_code=204, responses=ERRORS)
    async def put_model(
        group_id: int,
        request: Request,
        storage: StorageDep,
        token: TokenDep,
        x_model_sha256: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Upload the raw model bytes; header X-Model-SHA256 must be their hex sha256."""
        claimed = (x_model_sha256 or "").strip().lower()
        if not SHA256_HEX.match(claimed):
            raise StorageError("header X-Model-SHA256 with the body's hex sha256 is required")
        data = await request.body()
        if len(data) > settings.max_model_bytes:
            return await _error(413, f"model is larger than {settings.max_model_mb} MiB")
        actual = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if actual != claimed:
            raise StorageError(f"X-Model-SHA256 {claimed} does not match the body ({actual})")
        await storage.put_model(group_id=group_id, token=token, model=Model(actual, data))
        return Response(status_code=204)

    @app.get(
        "/groups/{group_id}/model",
        responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
    )
    async def get_model(group_id: int, storage: StorageDep) -> Response:
        """The group's latest model bytes (ETag and X-Model-SHA256 = their sha256)."""
        model = await storage.get_model(group_id=group_id)
        headers = {"ETag": f'"{model.sha256}"', "X-Model-SHA256": model.sha256}
        return Response(model.data, media_type="application/octet-stream", headers=headers)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body documenting ``model`` (for routes that parse by hand)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _parse_body(model: type[ModelT], raw: bytes) -> ModelT:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Unauthorized()
    return token.strip()


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters documenting ``model`` (for routes that parse by hand)."""
    props = model.model_json_schema()["properties"]
    return [{"name": k, "in": "query", "required": False, "schema": v} for k, v in props.items()]


async def _error(status_code: int, message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=status_code)


def _add_misc_routes(app: FastAPI) -> None:
    @app.get("/health", response_model=schemas.Health)
    async def health() -> Any:
        return JSONResponse({"status": "ok"})

    @app.get("/events", response_model=schemas.EventPage)
    async def events(
        storage: StorageDep,
        since: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Any:
        """The append-only event log, oldest first, ids greater than ``since``."""
        page = await storage.events(since=since, limit=limit)
        next_since = page[-1]["id"] if page else since
        return {"events": page, "next_since": next_since}


# -- serving ---------------------------------------------------------------------------------


def _check_database(db_path: Path) -> None:
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db_path), timeout=5)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise RegistryStartError(f"database {db_path} is not usable: {exc}") from None
    if str(mode).lower() != "wal":
        raise RegistryStartError(f"database {db_path} cannot use WAL mode (got {mode})")


def serve(
    *,
    host: str,
    port: int,
    db_path: Path,
    node_ttl: float = 90.0,
    group_ttl: float = 120.0,
    max_model_mb: float = 64.0,
    log_level: str = "info",
) -> None:
    """Serve the registry with uvicorn (uvloop + httptools, no access log) until stopped."""
    import uvicorn

    from mycelium.procs import port_is_free

    db_path = Path(db_path)
    _check_database(db_path)
    if not port_is_free(port, host):
        raise RegistryStartError(f"port {port} on {host} is already in use")
    settings = Settings(
        db_path=db_path, node_ttl=node_ttl, group_ttl=group_ttl, max_model_mb=max_model_mb
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    server = StreamClosingServer(config, app.state.dashboard)
    logger.info("registry on http://%s:%d (db %s, docs at /docs)", host, port, db_path)
    logger.info("dashboard at http://%s:%d/dashboard, metrics at /metrics", host, port)
    try:
        server.run()
    except SystemExit as exc:
        raise RegistryStartError(f"uvicorn stopped at start-up (exit {exc.code})") from None
    if not server.started:
        raise RegistryStartError("the registry did not start; see the log above")
