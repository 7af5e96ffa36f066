"""Groups: create, discover (the hottest read), read, membership, the coordinator's reports."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from mycelium import api
from mycelium.registry.deps import CreatorTokenDep, StoreDep, TokenDep
from mycelium.registry.parsing import VALIDATION_ERROR, parse_query, query_parameters
from mycelium.registry.store import GroupSpec, RoundReport, Row

router = APIRouter(prefix="/groups", tags=["groups"])


class JsonCache:
    """JSON bytes of discovery answers, reused while the store returns the same list."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: dict[tuple[Any, ...], tuple[list[Row], bytes]] = {}

    def encode(self, key: tuple[Any, ...], rows: list[Row]) -> bytes:
        cached = self._entries.get(key)
        if cached is None or cached[0] is not rows:
            if len(self._entries) > self.size:
                self._entries.clear()
            cached = (rows, json.dumps(rows).encode())
            self._entries[key] = cached
        return cached[1]


@router.post("", status_code=201, response_model=api.GroupCreated, responses=api.ERRORS)
async def create_group(
    body: api.GroupCreate,
    store: StoreDep,
    token: CreatorTokenDep,
    idempotency_key: Annotated[api.IdempotencyKey | None, Header()] = None,
) -> Any:
    """Create a group with a node token (the node is recorded as its creator; 429 beyond
    its allowance of live groups) or the operator token; the creator is not a member.
    The same ``Idempotency-Key`` again is answered with the same group, token and invite."""
    fields = body.model_dump()
    fields["model_spec"] = None if body.model_spec is None else json.dumps(body.model_spec)
    fields["strategy_params"] = json.dumps(body.strategy_params)
    spec = GroupSpec(**fields)
    created = await store.create_group(spec=spec, token=token, idempotency_key=idempotency_key)
    return {
        "group_id": created.group_id,
        "group_token": created.group_token,
        "invite_code": created.invite_code,
    }


@router.get(
    "",
    response_model=list[api.GroupPublic],
    responses=VALIDATION_ERROR,
    openapi_extra={"parameters": query_parameters(api.GroupQuery)},
)
async def list_groups(request: Request, store: StoreDep) -> Any:
    """Live groups, best accuracy first (none last), then most live members.

    The hottest read: its query is validated with one pydantic call instead of FastAPI's
    per-parameter path, and the JSON of an unchanged answer is reused.
    """
    query = parse_query(api.GroupQuery, request.query_params)
    groups = await store.list_groups(**query.model_dump())
    key = tuple(query.model_dump().values())
    content = request.app.state.discovery_json.encode(key, groups)
    return Response(content, media_type="application/json")


@router.get("/{group_id}", response_model=api.GroupDetail, responses=api.ERRORS)
async def get_group(group_id: api.Id, store: StoreDep) -> Any:
    return await store.get_group(group_id=group_id)


@router.post("/{group_id}/join", response_model=api.MembershipOut, responses=api.ERRORS)
async def join(group_id: api.Id, body: api.JoinIn, store: StoreDep, token: TokenDep) -> Any:
    """Join with the node's token; 409 when full, 403 without a valid invite."""
    await store.join(
        group_id=group_id,
        node_id=body.node_id,
        token=token,
        invite_code=body.invite_code,
        flower_node_id=body.flower_node_id,
        public_key=body.public_key,
    )
    return {"group_id": group_id, "node_id": body.node_id}


@router.get("/{group_id}/members", response_model=list[api.MemberKey], responses=api.ERRORS)
async def members(group_id: api.Id, store: StoreDep, token: TokenDep) -> Any:
    """The members and the keys of their memberships, for the group's host (group token)."""
    return await store.group_members(group_id=group_id, token=token)


@router.put("/{group_id}/members/{node_id}/admission", status_code=204, responses=api.ERRORS)
async def admit(
    group_id: api.Id,
    node_id: api.Id,
    body: api.AdmitIn,
    store: StoreDep,
    token: TokenDep,
) -> Response:
    """The host registered this member's key on its SuperLink (group token); 409 when the
    node is not a member or has another key now."""
    await store.admit(
        group_id=group_id,
        token=token,
        node_id=node_id,
        public_key=body.public_key,
        flower_node_id=body.flower_node_id,
    )
    return Response(status_code=204)


@router.post("/{group_id}/leave", response_model=api.MembershipOut, responses=api.ERRORS)
async def leave(group_id: api.Id, body: api.LeaveIn, store: StoreDep, token: TokenDep) -> Any:
    await store.leave(group_id=group_id, node_id=body.node_id, token=token)
    return {"group_id": None, "node_id": body.node_id}


@router.post("/{group_id}/heartbeat", responses=api.ERRORS)
async def group_heartbeat(group_id: api.Id, store: StoreDep, token: TokenDep) -> dict[str, Any]:
    """The group's coordinator is alive (group token)."""
    await store.group_heartbeat(group_id=group_id, token=token)
    return {"group_id": group_id, "alive": True}


@router.delete("/{group_id}", status_code=204, responses=api.ERRORS)
async def close_group(group_id: api.Id, store: StoreDep, token: TokenDep) -> Response:
    """The group's host stops the group (group token): it is dissolved at once and its
    members are detached (events ``evicted``, ``dissolved``) so they re-home."""
    await store.close_group(group_id=group_id, token=token)
    return Response(status_code=204)


@router.post("/{group_id}/rounds", status_code=201, responses=api.ERRORS)
async def report_round(
    group_id: api.Id, body: api.RoundIn, store: StoreDep, token: TokenDep
) -> dict[str, Any]:
    """Record a finished round's metrics (group token)."""
    report = RoundReport(**body.model_dump())
    await store.report_round(group_id=group_id, token=token, report=report)
    return {"group_id": group_id, "round": body.round}
