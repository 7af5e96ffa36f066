"""Nodes: register, read, leave the network, heartbeat (the hottest write), migrate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from mycelium import api
from mycelium.registry.deps import StoreDep, TokenDep, bearer_token
from mycelium.registry.parsing import json_body, parse_body
from mycelium.registry.store import Heartbeat

router = APIRouter(prefix="/nodes", tags=["nodes"])


@router.post("", status_code=201, response_model=api.NodeCreated, responses=api.ERRORS)
async def register_node(
    body: api.NodeCreate,
    store: StoreDep,
    idempotency_key: Annotated[api.IdempotencyKey | None, Header()] = None,
) -> Any:
    """Register a node; keep the token, it authenticates every write about this node.
    The same ``Idempotency-Key`` again is answered with the same node and token."""
    created = await store.create_node(
        name=body.name,
        address=body.address,
        num_samples=body.num_samples,
        task=body.task,
        idempotency_key=idempotency_key,
    )
    return {"node_id": created.node_id, "token": created.token}


@router.get("", response_model=list[api.NodePublic])
async def list_nodes(
    store: StoreDep, group_id: api.Id | None = None, alive: bool | None = None
) -> Any:
    return await store.list_nodes(group_id=group_id, alive=alive)


@router.get("/{node_id}", response_model=api.NodePublic, responses=api.ERRORS)
async def get_node(node_id: api.Id, store: StoreDep) -> Any:
    return await store.get_node(node_id=node_id)


@router.delete("/{node_id}", status_code=204, responses=api.ERRORS)
async def delete_node(node_id: api.Id, store: StoreDep, token: TokenDep) -> Response:
    """Leave the network: frees the node's group slot; its token stops working."""
    await store.delete_node(node_id=node_id, token=token)
    return Response(status_code=204)


@router.post(
    "/{node_id}/heartbeat",
    response_model=api.HeartbeatOut,
    responses=api.ERRORS,
    openapi_extra={
        "requestBody": json_body(api.HeartbeatIn),
        "security": [{"HTTPBearer": []}],
    },
)
async def heartbeat(node_id: api.Id, request: Request) -> Any:
    """Report liveness and metrics; 409 (with the actual group) if group_id is wrong.

    The hottest write: body and token are read with one call each instead of FastAPI's
    dependency path (HeartbeatIn documents the body).
    """
    token = bearer_token(request)
    body = parse_body(api.HeartbeatIn, await request.body())
    beat = Heartbeat(node_id=node_id, **body.model_dump())
    group_id = await request.app.state.storage.heartbeat(beat=beat, token=token)
    return JSONResponse({"node_id": node_id, "group_id": group_id, "alive": True})


@router.post("/{node_id}/migrate", response_model=api.MigrateOut, responses=api.ERRORS)
async def migrate(node_id: api.Id, body: api.MigrateIn, store: StoreDep, token: TokenDep) -> Any:
    """Leave the current group and join another in one transaction."""
    from_group = await store.migrate(
        node_id=node_id,
        token=token,
        to_group_id=body.to_group_id,
        invite_code=body.invite_code,
        reason=body.reason,
        expected_gain=body.expected_gain,
        public_key=body.public_key,
    )
    return {"node_id": node_id, "from_group_id": from_group, "to_group_id": body.to_group_id}


@router.put("/{node_id}/public-key", status_code=204, responses=api.ERRORS)
async def set_public_key(
    node_id: api.Id, body: api.PublicKeyIn, store: StoreDep, token: TokenDep
) -> Response:
    """A new key for the node's current membership (node token only)."""
    await store.set_public_key(node_id=node_id, token=token, public_key=body.public_key)
    return Response(status_code=204)


@router.get("/{node_id}/admission", response_model=api.AdmissionOut, responses=api.ERRORS)
async def admission(node_id: api.Id, store: StoreDep, token: TokenDep) -> Any:
    """Whether the group's host has registered the node's current key (node token)."""
    return await store.admission(node_id=node_id, token=token)
