"""Typed dependencies of the routes: the store, the settings and the Bearer token.

They are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which
measured at a third of the heartbeat throughput.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mycelium.registry.settings import Settings
from mycelium.registry.store import RegistryStore

_bearer = HTTPBearer(
    auto_error=False, description="A node token, a group token or the operator token."
)


class Unauthorized(Exception):
    """No usable ``Authorization: Bearer`` header: 401."""

    def __init__(self, message: str = "missing 'Authorization: Bearer <token>' header") -> None:
        super().__init__(message)
        self.message = message


async def get_store(request: Request) -> RegistryStore:
    store: RegistryStore = request.app.state.storage
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def optional_token(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return creds.credentials if creds is not None else None


async def require_token(token: Annotated[str | None, Depends(optional_token)]) -> str:
    if not token:
        raise Unauthorized()
    return token


def bearer_token(request: Request) -> str:
    """The token of a hand-parsed route (same rule as :func:`require_token`)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return token.strip()


async def require_creator_token(token: Annotated[str | None, Depends(optional_token)]) -> str:
    if not token:
        raise Unauthorized(
            "creating a group needs 'Authorization: Bearer <token>' with a registered "
            "node's token or the operator token"
        )
    return token


StoreDep = Annotated[RegistryStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokenDep = Annotated[str, Depends(require_token)]
CreatorTokenDep = Annotated[str, Depends(require_creator_token)]
