"""The round loop bounds Flower's object pulls (mycelium.flower.rounds.objects_pulled_within):
a reply whose objects never arrive (its member was cut half-way through pushing it) costs
the round what is left of its timeout, not Flower's two hours of retries."""

from __future__ import annotations

import time

import pytest
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError
from flwr.superlink.grid import http_grid

from mycelium.flower.rounds import objects_pulled_within


def never_there(object_id: str) -> bytes:
    """What the SuperLink answers for an object its sender never pushed."""
    raise ObjectUnavailableError(object_id)


def test_a_missing_object_gives_up_within_the_bound() -> None:
    original = http_grid.pull_objects
    started = time.monotonic()
    with objects_pulled_within(0.5), pytest.raises(ObjectPullError):
        http_grid.pull_objects(["a" * 64], pull_object_fn=never_there)
    # one retry after Flower's first backoff (1 s +- 20%) passes the 0.5 s bound
    assert time.monotonic() - started < 5.0
    assert http_grid.pull_objects is original  # restored after the block


def test_the_bound_is_restored_after_an_error() -> None:
    original = http_grid.pull_objects
    with pytest.raises(RuntimeError), objects_pulled_within(0.5):
        raise RuntimeError("the round failed")
    assert http_grid.pull_objects is original
