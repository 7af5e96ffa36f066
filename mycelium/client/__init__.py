"""The registry's clients: :class:`RegistryClient` (its HTTP API as Python calls that return
:mod:`mycelium.api` models), the exception tree of refusals, and operator token files.

Used by nodes, group hosts, the Flower ServerApp, the demo, the lab and the benches. Imports
httpx and pydantic, never torch, flwr or fastapi.

``errors``: :class:`RegistryError` and its subclasses, one per kind of refusal;
``tokens``: reading and writing operator token files; ``registry``: the client itself;
``backoff``: how long to wait before trying an unreachable registry again;
``endpoints``: the registry URLs a client tries in order (``--registry-url URL1,URL2``);
``failover``: how a call keeps to the URL that answers and moves on from one that does not.
"""

from mycelium.client.backoff import Backoff
from mycelium.client.endpoints import EndpointError, RegistryEndpoints
from mycelium.client.errors import (
    Conflict,
    Forbidden,
    LimitReached,
    NotFound,
    RegistryError,
    RegistryUnavailable,
)
from mycelium.client.failover import Failover
from mycelium.client.registry import ModelVersion, RegistryClient
from mycelium.client.tokens import (
    MIN_TOKEN_CHARS,
    TokenFileError,
    read_token_file,
    write_token_file,
)

__all__ = [
    "MIN_TOKEN_CHARS",
    "Backoff",
    "Conflict",
    "EndpointError",
    "Failover",
    "Forbidden",
    "LimitReached",
    "ModelVersion",
    "NotFound",
    "RegistryClient",
    "RegistryEndpoints",
    "RegistryError",
    "RegistryUnavailable",
    "TokenFileError",
    "read_token_file",
    "write_token_file",
]
