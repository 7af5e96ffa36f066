"""Refusals of the store. They say what was refused, not how a protocol reports it: the
registry app maps each class to its HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    """A refused operation; ``message`` is safe to show to the caller."""

    def __init__(self, message: str, *, group_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.group_id = group_id


class NotFoundError(StoreError):
    """The node, group or model does not exist."""


class ForbiddenError(StoreError):
    """The token (or invite code) is not valid for what it tries to do."""


class ConflictError(StoreError):
    """The state forbids it (full group, wrong membership, dissolved group).

    ``group_id`` is the node's actual group where that helps it resynchronise.
    """


class LimitError(StoreError):
    """A bounded allowance is used up (e.g. the live groups one node may own)."""


class StoreUnusable(Exception):
    """The database cannot be opened, migrated, written or (SQLite) put in WAL mode."""


class StoreUnavailable(Exception):
    """The database cannot be reached now (PostgreSQL): the request is answered 503 and
    the connection is made again at a later call."""
