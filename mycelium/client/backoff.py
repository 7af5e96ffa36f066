"""How often a caller tries the registry again after it failed: exponential backoff with
jitter and a cap, so that callers who lost the registry together do not return together."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Attempt ``n`` (0 first) waits between half and all of ``min(cap, first * 2**n)``
    seconds ("equal jitter"): never less than half the step, spread over the other half."""

    first: float = 1.0
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        step = min(self.cap, self.first * 2.0 ** min(attempt, 32))
        return step / 2 + (rng or _RNG).uniform(0.0, step / 2)


_RNG = random.Random()
