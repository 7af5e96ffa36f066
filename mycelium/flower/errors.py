"""The Flower runtime's exception tree. Every message is one line and holds no secret."""

from __future__ import annotations


class FlowerError(RuntimeError):
    """Base of the errors of :mod:`mycelium.flower`."""


class FlowerNotInstalled(FlowerError):
    """A Flower executable is neither beside the interpreter nor on PATH; retrying cannot
    fix it."""


class ChildExited(FlowerError):
    """A Flower child process exited while we waited for it to become ready."""


class GroupHostError(FlowerError):
    """A group could not be started."""


class FitError(FlowerError):
    """The trainer endpoint could not be reached or refused the request."""
