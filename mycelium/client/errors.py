"""What a registry call raises: one tree under :class:`RegistryError`, one class per kind of
refusal, each with the HTTP status and the registry's ``detail``."""

from __future__ import annotations

from typing import Any

import httpx


class RegistryError(Exception):
    """The registry refused a request, answered something unexpected, or could not be reached.

    ``maybe_applied``: an earlier attempt of the same request reached a registry whose answer
    was lost (timeout, dropped connection, 5xx), so a refusal may describe what that attempt
    did (e.g. 409 "already in group 7" after a migration to group 7).
    """

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None):
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail
        self.maybe_applied = False


class RegistryUnavailable(RegistryError):
    """No registry answered: every URL given failed with a refused connection, a timeout or
    a 5xx answer, each tried the bounded number of times (docs/registry.md, "Failover")."""


class NotFound(RegistryError):
    """404: the node, group or model does not exist."""


class Forbidden(RegistryError):
    """401/403: missing or wrong token, or a missing/wrong invite code."""


class LimitReached(RegistryError):
    """429: an allowance is used up (e.g. the live groups a node may own)."""


class Conflict(RegistryError):
    """409: full group, wrong membership, failed group; see :attr:`actual_group_id`."""

    @property
    def actual_group_id(self) -> int | None:
        """The node's group according to the registry (heartbeat 409), else None."""
        if isinstance(self.detail, dict):
            value = self.detail.get("group_id")
            return int(value) if value is not None else None
        return None


_BY_STATUS: dict[int, type[RegistryError]] = {
    404: NotFound,
    401: Forbidden,
    403: Forbidden,
    409: Conflict,
    429: LimitReached,
}


def _detail_message(detail: Any) -> str:
    """One line from a FastAPI ``detail`` (a string, a dict with message, or 422 errors)."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict) and "message" in detail:
        return str(detail["message"])
    if isinstance(detail, list):
        parts = []
        for err in detail:
            if isinstance(err, dict):
                loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
        return "; ".join(parts) or "invalid request"
    return str(detail)


def error_for(response: httpx.Response) -> RegistryError:
    """The exception for a refused request (status 400 or more)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    code = response.status_code
    message = f"{response.request.method} {response.request.url.path} -> {code}: "
    message += _detail_message(detail).replace("\n", " ")
    cls = RegistryUnavailable if code >= 500 else _BY_STATUS.get(code, RegistryError)
    return cls(message, status_code=code, detail=detail)
