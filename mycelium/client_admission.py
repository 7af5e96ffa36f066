"""The registry calls of admission (docs/security.md), mixed into
:class:`mycelium.client.RegistryClient` (kept apart so the client stays readable)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class AdmissionCalls:
    """Membership keys (node token), member list and receipts (group token)."""

    if TYPE_CHECKING:

        def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

        def _json(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def set_public_key(self, node_id: int, public_key: str) -> None:
        """A new SuperNode key for the node's current membership (node token)."""
        self._request("PUT", f"/nodes/{node_id}/public-key", json={"public_key": public_key})

    def admission(self, node_id: int) -> dict[str, Any]:
        """The node's admission receipt (node token): ``admitted``, ``flower_node_id``."""
        return self._json("GET", f"/nodes/{node_id}/admission")

    def group_members(self, group_id: int) -> list[dict[str, Any]]:
        """The group's members with their keys (group token)."""
        return self._json("GET", f"/groups/{group_id}/members")

    def admit(self, group_id: int, node_id: int, *, public_key: str, flower_node_id: int) -> None:
        """Write a member's admission receipt (group token)."""
        body = {"public_key": public_key, "flower_node_id": flower_node_id}
        self._request("PUT", f"/groups/{group_id}/members/{node_id}/admission", json=body)
