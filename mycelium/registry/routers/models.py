"""A group's model: uploaded by its coordinator as raw bytes, downloaded by anyone."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response

from mycelium import api
from mycelium.registry.deps import SettingsDep, StoreDep, TokenDep
from mycelium.registry.model_check import ModelMismatch, check_upload
from mycelium.registry.store import Model

router = APIRouter(prefix="/groups/{group_id}/model", tags=["models"])

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@router.put("", status_code=204, responses=api.ERRORS)
async def put_model(
    group_id: api.Id,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    token: TokenDep,
    x_model_sha256: Annotated[str | None, Header()] = None,
) -> Response:
    """Upload the raw model bytes; header X-Model-SHA256 must be their hex sha256. A group
    founded with a fingerprint refuses (422) arrays that do not fit its model spec."""
    claimed = (x_model_sha256 or "").strip().lower()
    if not SHA256_HEX.match(claimed):
        raise HTTPException(400, "header X-Model-SHA256 with the body's hex sha256 is required")
    data = await request.body()
    if len(data) > settings.max_model_bytes:
        raise HTTPException(413, f"model is larger than {settings.max_model_mb} MiB")
    actual = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    if actual != claimed:
        raise HTTPException(400, f"X-Model-SHA256 {claimed} does not match the body ({actual})")
    spec = await store.model_spec(group_id=group_id, token=token)
    if spec is not None:
        try:
            await asyncio.to_thread(check_upload, data, spec)
        except ModelMismatch as exc:
            raise HTTPException(422, str(exc)) from None
    await store.put_model(group_id=group_id, token=token, model=Model(actual, data))
    return Response(status_code=204)


@router.get(
    "",
    responses={200: {"content": {"application/octet-stream": {}}}, 304: {}, **api.ERRORS},
)
async def get_model(
    group_id: api.Id, store: StoreDep, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """The group's latest model bytes (ETag and X-Model-SHA256 = their sha256); 304 without
    a body when ``If-None-Match`` names that ETag (a node that scored this version already)."""
    model = await store.get_model(group_id=group_id)
    etag = f'"{model.sha256}"'
    headers = {"ETag": etag, "X-Model-SHA256": model.sha256}
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(model.data, media_type="application/octet-stream", headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison: ``*`` or any listed tag (``W/`` prefix ignored)."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
