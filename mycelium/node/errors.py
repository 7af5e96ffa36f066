"""The node agent's exception tree. Every message is one line and holds no secret."""

from __future__ import annotations


class NodeError(Exception):
    """Base of the errors of :mod:`mycelium.node`."""


class FatalNodeError(NodeError):
    """An error retrying cannot fix (a missing executable, an unusable data file, a refused
    registration): the agent cleans up and stops; ``mycelium node`` exits with code 1."""
