"""RegistryClient: the registry's HTTP API as Python calls over an ``httpx.Client``, each
answer parsed into its :mod:`mycelium.api` model. Pass a starlette ``TestClient`` as
``http`` to drive an in-process app."""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from mycelium import config
from mycelium.api import (
    AdmissionOut,
    EventPage,
    EventPublic,
    GroupCreated,
    GroupDetail,
    GroupPublic,
    Health,
    HeartbeatOut,
    MemberKey,
    MembershipOut,
    MigrateOut,
    NodeCreated,
    NodePublic,
)
from mycelium.client.endpoints import RegistryEndpoints
from mycelium.client.errors import Conflict, NotFound, RegistryError
from mycelium.client.failover import DEFAULT as DEFAULT_FAILOVER
from mycelium.client.failover import Failover, Sticky

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_GROUPS = TypeAdapter(list[GroupPublic])
_NODES = TypeAdapter(list[NodePublic])
_MEMBERS = TypeAdapter(list[MemberKey])


@dataclass(frozen=True)
class ModelVersion:
    """A group's model as downloaded: its sha256 and bytes (None: not sent, because the
    caller already holds this version)."""

    sha256: str
    data: bytes | None


class RegistryClient:
    """Typed calls to the registry API; errors become :class:`RegistryError` subclasses.

    Given several registry URLs it keeps to one while it answers (any answer below 500,
    refusals included) and moves to the next on a refused connection, a timeout or a 5xx,
    waiting a jittered backoff before each next try; when every try failed it raises
    :class:`RegistryUnavailable`. Writes are safe to try again: see docs/registry.md.
    """

    def __init__(
        self,
        endpoints: RegistryEndpoints | str,
        *,
        token: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = config.REGISTRY_TIMEOUT_S,
        ca_file: str | Path | None = None,
        failover: Failover = DEFAULT_FAILOVER,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``endpoints``: the registry URLs (a string is parsed: ``URL1,URL2``). ``ca_file``:
        PEM CA that signed the ``https://`` registries' certificates, used for every URL
        (default: the system trust store). A missing or unreadable file is a one-line
        :class:`mycelium.net.certs.CertificateError`. ``sleep`` and ``rng``: the backoff's
        wait and jitter (tests inject them)."""
        self.endpoints = RegistryEndpoints.of(endpoints)
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._endpoints = Sticky(self.endpoints, failover, sleep=sleep, rng=rng)
        self._owns_http = http is None
        # Our own client carries the timeout on every call; a given one keeps its own.
        self._http = http if http is not None else self._make_http(timeout, ca_file)

    @property
    def base_url(self) -> str:
        """The registry URL in use now (the one that answered last)."""
        return self._endpoints.current

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
        request = {"json": json, "params": params, "content": content, "headers": all_headers}
        return self._endpoints.request(self._http, method, path, **request)

    def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """The answer to one request, parsed into ``model``."""
        response = self._request(method, path, **kwargs)
        with _fits(response):
            return model.model_validate_json(response.content)

    # -- health, nodes ----------------------------------------------------------------------

    def health(self) -> bool:
        """True when the registry answers /health with status ok."""
        try:
            return self._call(Health, "GET", "/health", auth=False).status == "ok"
        except RegistryError:
            return False

    def register_node(
        self, *, name: str, num_samples: int, task: str = config.TASK, address: str | None = None
    ) -> NodeCreated:
        """Register a node; also sets :attr:`token` to the node's token. The request carries
        a new ``Idempotency-Key``: a retry after a lost answer gets the same node back."""
        body = {"name": name, "num_samples": num_samples, "task": task, "address": address}
        headers = {IDEMPOTENCY_HEADER: new_idempotency_key()}
        creds = self._call(NodeCreated, "POST", "/nodes", json=body, auth=False, headers=headers)
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
        personal_accuracy: float | None = None,
    ) -> HeartbeatOut:
        body = {
            "group_id": group_id,
            "accuracy": accuracy,
            "loss": loss,
            "num_samples": num_samples,
            "round": round,
            "flower_node_id": flower_node_id,
            "personal_accuracy": personal_accuracy,
        }
        return self._call(HeartbeatOut, "POST", f"/nodes/{node_id}/heartbeat", json=body)

    def delete_node(self, node_id: int) -> None:
        """Leave the network; a 404 after an attempt whose answer was lost is that attempt's."""
        try:
            self._request("DELETE", f"/nodes/{node_id}")
        except NotFound as exc:
            if not exc.maybe_applied:
                raise

    def get_node(self, node_id: int) -> NodePublic:
        return self._call(NodePublic, "GET", f"/nodes/{node_id}")

    def list_nodes(
        self, *, group_id: int | None = None, alive: bool | None = None
    ) -> list[NodePublic]:
        params = {"group_id": group_id, "alive": _bool_param(alive)}
        return _parse(_NODES, self._request("GET", "/nodes", params=params))

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
    ) -> GroupCreated:
        """Create a group with the token set: a node's (it is recorded as the creator) or
        the operator's (``RegistryClient(url, token=read_token_file(path))``).

        ``model_spec`` + ``fingerprint`` (see :mod:`mycelium.fingerprint`) make the registry
        refuse model uploads that do not fit; ``strategy`` is listed for discovery.

        The request carries a new ``Idempotency-Key``: a retry after a lost answer gets the
        same group (and the same token and invite code) back, never a second group."""
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
        headers = {IDEMPOTENCY_HEADER: new_idempotency_key()}
        return self._call(GroupCreated, "POST", "/groups", json=body, headers=headers)

    def list_groups(
        self,
        *,
        task: str | None = None,
        has_capacity: bool | None = None,
        limit: int = 20,
        offset: int = 0,
        fingerprint: str | None = None,
        strategy: str | None = None,
    ) -> list[GroupPublic]:
        params = {
            "task": task,
            "fingerprint": fingerprint,
            "strategy": strategy,
            "has_capacity": _bool_param(has_capacity),
            "limit": limit,
            "offset": offset,
        }
        return _parse(_GROUPS, self._request("GET", "/groups", params=params))

    def get_group(self, group_id: int) -> GroupDetail:
        return self._call(GroupDetail, "GET", f"/groups/{group_id}")

    def join_group(
        self,
        group_id: int,
        node_id: int,
        *,
        invite_code: str | None = None,
        flower_node_id: int | None = None,
        public_key: str | None = None,
    ) -> MembershipOut:
        """Join; ``public_key``: the SuperNode key of this membership (a TLS group admits it).
        Joining the group the node is in already is answered as a join (safe to retry)."""
        body = {"node_id": node_id, "invite_code": invite_code, "flower_node_id": flower_node_id}
        body["public_key"] = public_key
        return self._call(MembershipOut, "POST", f"/groups/{group_id}/join", json=body)

    def leave_group(self, group_id: int, node_id: int) -> MembershipOut:
        """Leave; "not a member" (409, in no group) after an attempt whose answer was lost
        is that attempt's effect: answered as the leave."""
        body = {"node_id": node_id}
        try:
            return self._call(MembershipOut, "POST", f"/groups/{group_id}/leave", json=body)
        except Conflict as exc:
            if not (exc.maybe_applied and _in_group(exc, None)):
                raise
            return MembershipOut(group_id=None, node_id=node_id)

    def migrate(
        self,
        node_id: int,
        *,
        to_group_id: int,
        reason: str,
        expected_gain: float,
        invite_code: str | None = None,
        public_key: str | None = None,
    ) -> MigrateOut:
        """Leave the current group and join ``to_group_id`` in one registry transaction.

        "Already in ``to_group_id``" (409) after an attempt whose answer was lost is that
        attempt's migration: answered with ``from_group_id`` None (the lost answer had it)."""
        body = {
            "to_group_id": to_group_id,
            "invite_code": invite_code,
            "reason": reason,
            "expected_gain": expected_gain,
            "public_key": public_key,
        }
        try:
            return self._call(MigrateOut, "POST", f"/nodes/{node_id}/migrate", json=body)
        except Conflict as exc:
            if not (exc.maybe_applied and _in_group(exc, to_group_id)):
                raise
            return MigrateOut(node_id=node_id, from_group_id=None, to_group_id=to_group_id)

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
        version = self.model_version(group_id)
        return None if version is None else version.data

    def model_version(self, group_id: int, known_sha256: str | None = None) -> ModelVersion | None:
        """The group's latest model (None on 404), its bytes checked against their sha256.

        With ``known_sha256`` (a version the caller holds) the request carries
        ``If-None-Match``: when that is still the latest the registry answers 304 and the
        result has ``data=None``."""
        headers = {"If-None-Match": f'"{known_sha256}"'} if known_sha256 else None
        try:
            response = self._request("GET", f"/groups/{group_id}/model", headers=headers)
        except NotFound:
            return None
        expected = response.headers.get("X-Model-SHA256") or response.headers.get("ETag", "")
        expected = expected.strip('"')
        if response.status_code == 304:
            return ModelVersion(sha256=expected or str(known_sha256), data=None)
        actual = hashlib.sha256(response.content).hexdigest()
        if expected and actual != expected:
            raise RegistryError(
                f"model of group {group_id}: sha256 {actual} does not match {expected}"
            )
        return ModelVersion(sha256=actual, data=response.content)

    # -- events -----------------------------------------------------------------------------

    def events(self, *, since: int = 0, limit: int = 100) -> list[EventPublic]:
        params = {"since": since, "limit": limit}
        return self._call(EventPage, "GET", "/events", params=params).events

    # -- admission (docs/security.md) ---------------------------------------------------------

    def set_public_key(self, node_id: int, public_key: str) -> None:
        """A new SuperNode key for the node's current membership (node token)."""
        self._request("PUT", f"/nodes/{node_id}/public-key", json={"public_key": public_key})

    def admission(self, node_id: int) -> AdmissionOut:
        """The node's admission receipt (node token)."""
        return self._call(AdmissionOut, "GET", f"/nodes/{node_id}/admission")

    def group_members(self, group_id: int) -> list[MemberKey]:
        """The group's members with their keys (group token)."""
        return _parse(_MEMBERS, self._request("GET", f"/groups/{group_id}/members"))

    def admit(self, group_id: int, node_id: int, *, public_key: str, flower_node_id: int) -> None:
        """Write a member's admission receipt (group token)."""
        body = {"public_key": public_key, "flower_node_id": flower_node_id}
        self._request("PUT", f"/groups/{group_id}/members/{node_id}/admission", json=body)


def new_idempotency_key() -> str:
    """A fresh key for one create request (43 URL-safe characters, 256 random bits): the
    registry answers every request with this key with the same record. A secret: the
    record's token is derived from it, so it is never logged."""
    return secrets.token_urlsafe(32)


def _in_group(refusal: Conflict, group_id: int | None) -> bool:
    """True when a 409 says the node is in ``group_id`` now (None: in no group)."""
    detail = refusal.detail
    return isinstance(detail, dict) and "group_id" in detail and refusal.actual_group_id == group_id


def _parse(adapter: TypeAdapter[T], response: httpx.Response) -> T:
    """The answer's JSON as the adapter's type (a list of models)."""
    with _fits(response):
        return adapter.validate_json(response.content)


@contextmanager
def _fits(response: httpx.Response) -> Iterator[None]:
    """An answer that does not fit its model is a :class:`RegistryError` (a registry of
    another version, a proxy's page), not a crash in the caller."""
    try:
        yield
    except ValidationError as exc:
        where = f"{response.request.method} {response.request.url.path}"
        raise RegistryError(
            f"{where}: unexpected answer ({exc.error_count()} fields do not fit)",
            status_code=response.status_code,
        ) from None


def _bool_param(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")
