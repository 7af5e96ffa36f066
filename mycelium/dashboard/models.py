"""What the page is sent, as pydantic models: a group and a node as the page draws them (the
``state`` messages of the stream carry their fields), and the snapshot it opens from
(``GET /dashboard/snapshot``). Events are the API's own :class:`~mycelium.api.EventPublic`,
as in ``GET /events``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mycelium.api import EventPublic, GroupStatus, JoinPolicy

RECENT_EVENTS = 200
"""The most events a snapshot carries (the page's event list shows as many, newest first)."""
HISTORY_PER_NODE = 50
"""The most entries of one node's history a snapshot carries (the last ones)."""


class GroupView(BaseModel):
    """A group as the page shows it: public fields, none that changes with every beat."""

    group_id: int
    name: str
    task: str
    status: GroupStatus
    alive: bool
    num_members: int
    max_capacity: int
    join_policy: JoinPolicy
    performance_threshold: float
    round: int | None
    accuracy: float | None
    loss: float | None
    has_model: bool


class NodeView(BaseModel):
    """A node as the page shows it (no address, no ``last_seen``)."""

    node_id: int
    name: str
    task: str
    group_id: int | None
    alive: bool
    accuracy: float | None
    personal_accuracy: float | None
    round: int | None


class Snapshot(BaseModel):
    """What the page needs to draw the network as it is, and where the log follows on."""

    last_event_id: int = Field(
        description="The last event this snapshot includes: follow with "
        "GET /events/stream?after= this id (0: the log was empty)."
    )
    groups: list[GroupView] = Field(description="Every group, dead ones too.")
    nodes: list[NodeView] = Field(description="Every node.")
    recent_events: list[EventPublic] = Field(
        description=f"The last events up to last_event_id, oldest first "
        f"(at most `recent`, {RECENT_EVENTS} by default)."
    )
    history: list[EventPublic] = Field(
        description="Per registered node, its last registrations, moves and departures "
        f"(at most {HISTORY_PER_NODE} a node), oldest first."
    )
    migrations: int = Field(description="Migrations in the log up to last_event_id.")
    preservation: EventPublic | None = Field(
        description="The last self_preservation_* event: started means the registry holds "
        "expiry now."
    )
    node_names: dict[int, str] = Field(
        description="The registered name of each node recent_events name (deleted ones too)."
    )


GROUP_FIELDS = tuple(GroupView.model_fields)
NODE_FIELDS = tuple(NodeView.model_fields)
