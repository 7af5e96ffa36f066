"""RegistryClient: the registry's HTTP API as Python calls, over an ``httpx.Client``.

Used by nodes, the Flower ServerApp, the demo and tests. It imports neither torch, flwr nor
fastapi. Pass a starlette ``TestClient`` as ``http`` to drive an in-process app.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mycelium import config
from mycelium.client_admission import AdmissionCalls

logger = logging.getLogger(__name__)


class RegistryError(Exception):
    """The registry refused a request (or could not be reached)."""

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None):
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class RegistryUnavailable(RegistryError):
    """Connection refused, timeout, or a 5xx answer."""


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


class TokenFileError(ValueError):
    """A token file is missing, unreadable, empty or too short (the message never shows it)."""


MIN_TOKEN_CHARS = 16


def read_token_file(path: Path) -> str:
    """The secret in ``path`` (an operator token), surrounding whitespace stripped.

    Secrets come from files, never from the command line (``ps`` shows it) or logs.
    """
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise TokenFileError(f"token file {path}: {reason}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenFileError(
            f"token file {path} must hold one token of at least {MIN_TOKEN_CHARS} characters "
            "and no whitespace (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def write_token_file(path: Path) -> str:
    """Write a new random token to ``path`` (mode 0600) and return it: an operator token
    for ``registry --operator-token-file`` and ``group --operator-token-file``."""
    token = secrets.token_urlsafe(32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token


@dataclass(frozen=True)
class NodeCredentials:
    node_id: int
    token: str


@dataclass(frozen=True)
class GroupCredentials:
    group_id: int
    group_token: str
    invite_code: str | None


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


def _error_for(response: httpx.Response) -> RegistryError:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    code = response.status_code
    message = f"{response.request.method} {response.request.url.path} -> {code}: "
    message += _detail_message(detail).replace("\n", " ")
    cls: type[RegistryError]
    if code >= 500:
        cls = RegistryUnavailable
    elif code == 404:
        cls = NotFound
    elif code in (401, 403):
        cls = Forbidden
    elif code == 409:
        cls = Conflict
    elif code == 429:
        cls = LimitReached
    else:
        cls = RegistryError
    return cls(message, status_code=code, detail=detail)


class RegistryClient(AdmissionCalls):
    """Typed calls to the registry API; errors become :class:`RegistryError` subclasses."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = config.REGISTRY_TIMEOUT_S,
        ca_file: str | Path | None = None,
    ) -> None:
        """``ca_file``: PEM CA that signed an ``https://`` registry's certificate (default:
        the system trust store). A missing or unreadable file is a one-line
        :class:`mycelium.net.certs.CertificateError`."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._owns_http = http is None
        # Our own client carries the timeout on every call; a given one keeps its own.
        self._http = http if http is not None else self._make_http(timeout, ca_file)

    @staticmethod
    def _make_http(timeout: float, ca_file: str | Path | None) -> httpx.Client:
        if not ca_file:
            return httpx.Client(timeout=timeout)
        from mycelium.net.tls import registry_verify

        return httpx.Client(timeout=timeout, verify=registry_verify(ca_file))

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if auth and self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request(
                method,
                f"{self.base_url}{path}",
                json=json,
                params=params,
                content=content,
                headers=all_headers,
            )
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"{method} {path}: registry at {self.base_url} unreachable ({exc!r})"
            ) from exc
        if response.status_code >= 400:
            raise _error_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- health, nodes ----------------------------------------------------------------------

    def health(self) -> bool:
        """True when the registry answers /health with status ok."""
        try:
            return self._json("GET", "/health", auth=False).get("status") == "ok"
        except RegistryError:
            return False

    def register_node(
        self, *, name: str, num_samples: int, task: str = config.TASK, address: str | None = None
    ) -> NodeCredentials:
        """Register a node; also sets :attr:`token` to the node's token."""
        body = {"name": name, "num_samples": num_samples, "task": task, "address": address}
        data = self._json("POST", "/nodes", json=body, auth=False)
        creds = NodeCredentials(node_id=int(data["node_id"]), token=str(data["token"]))
        self.token = creds.token
        return creds

    def heartbeat(
        self,
        node_id: int,
        *,
        group_id: int | None,
        accuracy: float | None = None,
        loss: float | None = None,
        num_samples: int = 0,
        round: int | None = None,  # noqa: A002 - the API's field name
        flower_node_id: int | None = None,
    ) -> dict[str, Any]:
        body = {
            "group_id": group_id,
            "accuracy": accuracy,
            "loss": loss,
            "num_samples": num_samples,
            "round": round,
            "flower_node_id": flower_node_id,
        }
        return self._json("POST", f"/nodes/{node_id}/heartbeat", json=body)

    def delete_node(self, node_id: int) -> None:
        self._request("DELETE", f"/nodes/{node_id}")

    def get_node(self, node_id: int) -> dict[str, Any]:
        return self._json("GET", f"/nodes/{node_id}")

    def list_nodes(
        self, *, group_id: int | None = None, alive: bool | None = None
    ) -> list[dict[str, Any]]:
        params = {"group_id": group_id, "alive": _bool_param(alive)}
        return self._json("GET", "/nodes", params=params)

    # -- groups -----------------------------------------------------------------------------

    def create_group(
        self,
        *,
        name: str,
        fleet_address: str,
        task: str = config.TASK,
        max_capacity: int = config.MAX_CAPACITY,
        join_policy: str = config.JOIN_POLICY,
        performance_threshold: float = config.PERFORMANCE_THRESHOLD,
        certificate: str | None = None,
        model_spec: list[Any] | None = None,
        fingerprint: str | None = None,
        strategy: str = config.STRATEGY,
        strategy_params: dict[str, float] | None = None,
    ) -> GroupCredentials:
        """Create a group with the token set: a node's (it is recorded as the creator) or
        the operator's (``RegistryClient(url, token=read_token_file(path))``).

        ``model_spec`` + ``fingerprint`` (see :mod:`mycelium.fingerprint`) make the registry
        refuse model uploads that do not fit; ``strategy`` is listed for discovery."""
        body = {
            "name": name,
            "fleet_address": fleet_address,
            "task": task,
            "max_capacity": max_capacity,
            "join_policy": join_policy,
            "performance_threshold": performance_threshold,
            "strategy": strategy,
            "strategy_params": dict(strategy_params or {}),
        }
        if certificate is not None:
            body["certificate"] = certificate  # the PEM the group's SuperLink presents
        if model_spec is not None:
            body |= {"model_spec": model_spec, "fingerprint": fingerprint}
        data = self._json("POST", "/groups", json=body)
        return GroupCredentials(
            group_id=int(data["group_id"]),
            group_token=str(data["group_token"]),
            invite_code=data.get("invite_code"),
        )

    def list_groups(
        self,
        *,
        task: str | None = None,
        has_capacity: bool | None = None,
        limit: int = 20,
        offset: int = 0,
        fingerprint: str | None = None,
        strategy: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {
            "task": task,
            "fingerprint": fingerprint,
            "strategy": strategy,
            "has_capacity": _bool_param(has_capacity),
            "limit": limit,
            "offset": offset,
        }
        return self._json("GET", "/groups", params=params)

    def get_group(self, group_id: int) -> dict[str, Any]:
        return self._json("GET", f"/groups/{group_id}")

    def join_group(
        self,
        group_id: int,
        node_id: int,
        *,
        invite_code: str | None = None,
        flower_node_id: int | None = None,
        public_key: str | None = None,
    ) -> dict[str, Any]:
        """Join; ``public_key``: the SuperNode key of this membership (a TLS group admits it)."""
        body = {"node_id": node_id, "invite_code": invite_code, "flower_node_id": flower_node_id}
        body["public_key"] = public_key
        return self._json("POST", f"/groups/{group_id}/join", json=body)

    def leave_group(self, group_id: int, node_id: int) -> dict[str, Any]:
        return self._json("POST", f"/groups/{group_id}/leave", json={"node_id": node_id})

    def migrate(
        self,
        node_id: int,
        *,
        to_group_id: int,
        reason: str,
        expected_gain: float,
        invite_code: str | None = None,
        public_key: str | None = None,
    ) -> dict[str, Any]:
        """Leave the current group and join ``to_group_id`` in one registry transaction."""
        body = {
            "to_group_id": to_group_id,
            "invite_code": invite_code,
            "reason": reason,
            "expected_gain": expected_gain,
            "public_key": public_key,
        }
        return self._json("POST", f"/nodes/{node_id}/migrate", json=body)

    # -- group coordinator (token = group token) ---------------------------------------------

    def group_heartbeat(self, group_id: int) -> None:
        self._request("POST", f"/groups/{group_id}/heartbeat", json={})

    def close_group(self, group_id: int) -> None:
        """Dissolve the group now (group token): its host is stopping it."""
        self._request("DELETE", f"/groups/{group_id}")

    def report_round(
        self,
        group_id: int,
        *,
        round: int,  # noqa: A002 - the API's field name
        accuracy: float,
        loss: float,
        num_nodes: int,
        num_examples: int,
    ) -> None:
        body = {
            "round": round,
            "accuracy": accuracy,
            "loss": loss,
            "num_nodes": num_nodes,
            "num_examples": num_examples,
        }
        self._request("POST", f"/groups/{group_id}/rounds", json=body)

    def put_model(self, group_id: int, data: bytes) -> None:
        """Upload the group's current model bytes with their sha256."""
        digest = hashlib.sha256(data).hexdigest()
        headers = {"X-Model-SHA256": digest, "Content-Type": "application/octet-stream"}
        self._request("PUT", f"/groups/{group_id}/model", content=data, headers=headers)

    def get_model(self, group_id: int) -> bytes | None:
        """The group's latest model bytes, or None on 404 (no model, no group); checks sha256."""
        try:
            response = self._request("GET", f"/groups/{group_id}/model")
        except NotFound:
            return None
        expected = response.headers.get("X-Model-SHA256") or response.headers.get("ETag", "")
        expected = expected.strip('"')
        actual = hashlib.sha256(response.content).hexdigest()
        if expected and actual != expected:
            raise RegistryError(
                f"model of group {group_id}: sha256 {actual} does not match {expected}"
            )
        return response.content

    # -- events -----------------------------------------------------------------------------

    def events(self, *, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self._json("GET", "/events", params={"since": since, "limit": limit})["events"]


def _bool_param(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")
