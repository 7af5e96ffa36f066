"""The registry's API as pydantic models: every request and answer, one family per resource.

The one contract between the registry and its clients (docs/api.md): the registry's routers
validate requests and serialise answers with these models, and
:class:`mycelium.client.RegistryClient` returns them, so a renamed field fails the type
checker, not another process at run time. Imports pydantic and, of ours, only leaf modules
(``config``, ``fingerprint``; ``node_keys`` and ``net`` inside the validators that need them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mycelium import config
from mycelium.fingerprint import FingerprintError, check_fingerprint

UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1

# -- the one rule for integers -----------------------------------------------------------
# Every integer that reaches the store, from a body, a query or a path, is one of these
# types: bounded to what SQLite holds (int64; Flower's uint64 node id is stored as TEXT) and
# to a sane range where one exists. Out of range is a 422 from validation, never an
# OverflowError (a 500) in the store. tests/registry/test_bounds.py checks every route.
Id = Annotated[int, Field(ge=1, le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Limit = Annotated[int, Field(ge=1, le=1000)]
Capacity = Annotated[int, Field(ge=1, le=10_000)]
FlowerNodeId = Annotated[int, Field(ge=0, le=UINT64_MAX)]


def _storable(text: str) -> str:
    """Text both stores keep as given: PostgreSQL's TEXT holds no NUL character (a 422
    here, never a 500 there). An unpaired surrogate never gets this far: JSON parsing
    refuses it."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


Storable = AfterValidator(_storable)
Name = Annotated[str, Field(min_length=1, max_length=100), Storable]
Address = Annotated[str, Field(min_length=1, max_length=200), Storable]
Accuracy = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Loss = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
JoinPolicy = Literal["open", "invite-only"]


def _public_key(text: str) -> str:
    # Imported here: answers need no key parsing, so a client does not load cryptography.
    from mycelium.node_keys import NodeKeyError, normalize_public_key

    try:
        return normalize_public_key(text)
    except NodeKeyError as exc:  # a one-line message that never repeats the input
        raise ValueError(str(exc)) from None


# A node's SuperNode-auth public key (one OpenSSH line, ECDSA on a NIST curve), stored in
# canonical form; the group's host registers it on its SuperLink (docs/security.md).
IdempotencyKey = Annotated[str, Field(min_length=32, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
"""A create request's ``Idempotency-Key`` header: a client-chosen secret (URL-safe, 32 or more
characters); a retry with the same key is answered with the record the first one created."""
PublicKey = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_public_key)]
GroupStatus = Literal["active", "failed", "dissolved"]
Fingerprint = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
Strategy = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"]  # config.STRATEGIES
StrategyParam = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
StrategyValue = Annotated[float, Field(allow_inf_nan=False)]


class _In(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 and not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# -- nodes ------------------------------------------------------------------------------------


class NodeCreate(_In):
    name: Name
    address: Address | None = None
    num_samples: Count
    task: Name = config.TASK


class NodeCreated(BaseModel):
    node_id: int
    token: str


class NodePublic(BaseModel):
    node_id: int
    name: str
    address: str | None
    task: str
    num_samples: int
    group_id: int | None
    flower_node_id: int | None
    accuracy: float | None
    loss: float | None
    round: int | None
    last_seen: float
    alive: bool
    created_at: float
    # Test accuracy of the model the node predicts with (its personal model or its group's,
    # docs/learning.md), as its last heartbeat reported it; never part of a group's figures.
    personal_accuracy: float | None = None


class HeartbeatIn(_In):
    group_id: Id | None
    accuracy: Accuracy | None = None
    loss: Loss | None = None
    num_samples: Count = 0
    round: Count | None = None
    flower_node_id: FlowerNodeId | None = None
    personal_accuracy: Accuracy | None = None


class HeartbeatOut(BaseModel):
    node_id: int
    group_id: int | None
    alive: bool = True


# -- groups -----------------------------------------------------------------------------------


class GroupCreate(_In):
    name: Name
    fleet_address: Annotated[
        str, Field(min_length=3, max_length=200, pattern=r"^\S+:\d{1,5}$"), Storable
    ]
    task: Name = config.TASK
    max_capacity: Capacity = config.MAX_CAPACITY
    join_policy: JoinPolicy = config.JOIN_POLICY
    performance_threshold: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = (
        config.PERFORMANCE_THRESHOLD
    )
    # PEM of the certificate the group's SuperLink presents; members trust exactly it.
    certificate: Annotated[str, Field(max_length=16_384), Storable] | None = None
    # The model every member trains: mycelium.fingerprint's spec and its hash (both or none).
    fingerprint: Fingerprint | None = None
    model_spec: Annotated[list[Any], Field(min_length=1, max_length=10_000)] | None = None
    strategy: Strategy = config.STRATEGY
    strategy_params: Annotated[dict[StrategyParam, StrategyValue], Field(max_length=8)] = {}

    @model_validator(mode="after")
    def _certificate_names_the_fleet_host(self) -> GroupCreate:
        if self.certificate is not None:
            from mycelium.net.addresses import split_host_port
            from mycelium.net.certs import CertificateError, certificate_names, covers

            host, _ = split_host_port(self.fleet_address)
            try:
                ok = covers(self.certificate, host)
            except CertificateError as exc:
                raise ValueError(f"certificate: {exc}") from None
            if not ok:
                names = ", ".join(certificate_names(self.certificate)) or "none"
                raise ValueError(f"certificate does not name {host} (it names: {names})")
        return self

    @model_validator(mode="after")
    def _spec_matches_fingerprint(self) -> GroupCreate:
        if (self.fingerprint is None) != (self.model_spec is None):
            raise ValueError("fingerprint and model_spec go together")
        if self.fingerprint is not None:
            try:
                check_fingerprint(self.model_spec, self.fingerprint)
            except FingerprintError as exc:
                raise ValueError(str(exc)) from None
        return self


class GroupQuery(BaseModel):
    """Query of ``GET /groups`` (parsed by hand on this hot path, see routers/groups.py)."""

    task: Name | None = None
    fingerprint: Fingerprint | None = None
    strategy: Strategy | None = None
    has_capacity: bool | None = None
    limit: Limit = 20
    offset: Count = 0
    include_dead: bool = False


class GroupCreated(BaseModel):
    group_id: int
    group_token: str
    invite_code: str | None


class GroupPublic(BaseModel):
    group_id: int
    name: str
    fleet_address: str
    task: str
    max_capacity: int
    join_policy: JoinPolicy
    performance_threshold: float
    status: GroupStatus
    alive: bool
    num_members: int
    accuracy: float | None = Field(description="The group's own claim (its round reports).")
    verified_accuracy: float | None = Field(
        description="Median of the accuracies its live members report for its model on "
        "their own data; discovery sorts by it."
    )
    verified_members: int = Field(description="How many member reports it rests on.")
    loss: float | None
    round: int | None
    has_model: bool
    model_sha256: str | None
    fingerprint: str | None
    strategy: str
    strategy_params: dict[str, float]
    last_report: float
    created_at: float
    certificate: str | None = None


class RoundIn(_In):
    round: Count
    accuracy: Accuracy
    loss: Loss
    num_nodes: Count
    num_examples: Count


class RoundPublic(BaseModel):
    round: int
    accuracy: float
    loss: float
    num_nodes: int
    num_examples: int
    reported_at: float


class GroupDetail(GroupPublic):
    model_spec: list[Any] | None
    members: list[NodePublic]
    rounds: list[RoundPublic]


# -- membership -------------------------------------------------------------------------------


class JoinIn(_In):
    node_id: Id
    invite_code: Annotated[str, Field(max_length=200), Storable] | None = None
    flower_node_id: FlowerNodeId | None = None
    public_key: PublicKey | None = None  # the key of this membership (a TLS group)


class LeaveIn(_In):
    node_id: Id


class MembershipOut(BaseModel):
    group_id: int | None
    node_id: int


class MigrateIn(_In):
    to_group_id: Id
    invite_code: Annotated[str, Field(max_length=200), Storable] | None = None
    reason: Annotated[str, Field(max_length=500), Storable] = ""
    expected_gain: Annotated[float, Field(allow_inf_nan=False)]
    public_key: PublicKey | None = None  # the key of the new membership


# -- admission (docs/security.md) ---------------------------------------------------------


class PublicKeyIn(_In):
    public_key: PublicKey


class MemberKey(BaseModel):
    node_id: int
    public_key: str | None
    alive: bool


class AdmitIn(_In):
    public_key: PublicKey
    flower_node_id: FlowerNodeId


class AdmissionOut(BaseModel):
    node_id: int
    group_id: int | None
    public_key: str | None
    admitted: bool = Field(description="The group's host registered this key on its SuperLink.")
    flower_node_id: int | None = Field(description="The Flower node id it got (if admitted).")


class MigrateOut(BaseModel):
    node_id: int
    from_group_id: int | None
    to_group_id: int


# -- events -----------------------------------------------------------------------------------

EventType = Literal[
    "node_registered",
    "node_deleted",
    "group_created",
    "joined",
    "left",
    "migrated",
    "evicted",
    "dissolved",
    "group_failed",
    "registry_resumed",
    "self_preservation_started",
    "self_preservation_ended",
]


class EventPublic(BaseModel):
    id: int
    type: EventType
    at: float
    node_id: int | None
    group_id: int | None
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[EventPublic]
    next_since: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    self_preservation: bool = False
    """True while the registry holds expiry: many nodes went silent at once."""


class ErrorOut(BaseModel):
    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 429)
}
"""OpenAPI ``responses`` of a route that may refuse (every refusal has a ``detail``)."""
