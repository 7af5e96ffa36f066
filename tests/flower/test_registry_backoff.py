"""Retrying the registry: exponential backoff with jitter and a cap (``mycelium.client``),
and the ServerApp's registry calls backing off while the registry is unreachable."""

from __future__ import annotations

import random

import numpy as np

from mycelium.client import Backoff
from mycelium.flower.group_registry import RETRY_CAP_S, GroupRegistry, RoundOutcome
from mycelium.procs import free_port
from tests.conftest import FakeClock


def test_backoff_doubles_within_jitter_up_to_its_cap() -> None:
    backoff, rng = Backoff(first=1.0, cap=30.0), random.Random(7)
    for attempt, step in enumerate((1, 2, 4, 8, 16, 30, 30, 30)):
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step, (attempt, delays)
        assert max(delays) - min(delays) > step / 4  # spread: callers do not move together
    assert backoff.delay(10_000, rng) <= 30.0


def test_the_serverapp_backs_off_an_unreachable_registry() -> None:
    """Nothing listens on the port: each failure pushes the next call further, capped."""
    clock = FakeClock(0.0)
    url = f"http://127.0.0.1:{free_port()}"
    outcome = RoundOutcome([np.zeros(2, np.float32)], 0.5, 1.0, 1, 1)
    with GroupRegistry(url, 1, token="t", timeout=1.0, clock=clock) as registry:
        calls = 0
        for _ in range(600):  # ten minutes of an idle group asking every second
            if not registry._backing_off():
                calls += 1
            registry.group()
            registry.publish(1, outcome)
            clock.advance(1.0)
        assert registry._failures == calls
        assert 20 <= calls <= 45, calls  # every second would be 1,200 requests
        assert registry._retry_at - clock.now <= RETRY_CAP_S
