"""Failover between registry URLs: keep to the one that answers, move to the next on a
refused connection, a timeout or a 5xx, with jittered backoff and a bounded number of tries
(docs/registry.md, "Failover and retried writes")."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from mycelium import config
from mycelium.client.backoff import Backoff
from mycelium.client.endpoints import RegistryEndpoints
from mycelium.client.errors import RegistryUnavailable, error_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failover:
    """How a client moves between registry URLs: each URL of a list is tried at most
    ``passes`` times per call (a lone URL once: its callers back off on their own); before
    each next try it waits ``backoff.delay(n)`` (n = tries so far - 1)."""

    passes: int = config.REGISTRY_FAILOVER_PASSES
    backoff: Backoff = Backoff(
        first=config.REGISTRY_FAILOVER_FIRST_S, cap=config.REGISTRY_FAILOVER_CAP_S
    )


DEFAULT = Failover()


class Sticky:
    """The URL in use (kept while it answers) and the tries of one request over the list.

    Any answer below 500 is an answer, refusals included. A refused connection, a timeout,
    a dropped connection or a 5xx moves to the next URL, which stays current. A refusal
    after a try that may have been applied (sent, then no answer) has ``maybe_applied``.
    """

    def __init__(
        self,
        endpoints: RegistryEndpoints,
        failover: Failover = DEFAULT,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoints, self.failover = endpoints, failover
        self._index = 0  # of the URL in use
        self._sleep, self._rng = sleep, rng  # the backoff's wait and jitter (tests inject them)

    @property
    def current(self) -> str:
        return self.endpoints.urls[self._index]

    def request(self, http: httpx.Client, method: str, path: str, **request: Any) -> httpx.Response:
        """The answer of the first registry that answers; its refusal (4xx) as the
        :class:`RegistryError` it maps to; :class:`RegistryUnavailable` when none did."""
        failures: list[str] = []
        maybe_applied = False
        for attempt in range(self._tries):
            if attempt:
                self._sleep(self.failover.backoff.delay(attempt - 1, self._rng))
            url = self.current
            try:
                response = http.request(method, f"{url}{path}", **request)
            except httpx.HTTPError as exc:
                failure = type(exc).__name__
                sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            else:
                if response.status_code < 500:
                    return _answer(response, maybe_applied)
                failure, sent = f"HTTP {response.status_code}", True
            maybe_applied = maybe_applied or (sent and method != "GET")
            failures.append(f"{url} ({failure})")
            self._move(url, failure)
        error = RegistryUnavailable(f"{method} {path}: no registry answered: {', '.join(failures)}")
        error.maybe_applied = maybe_applied
        raise error

    @property
    def _tries(self) -> int:
        count = len(self.endpoints)
        return count * self.failover.passes if count > 1 else 1

    def restart(self) -> None:
        """Use the first URL again (a test's way back to a registry it made fail)."""
        self._index = 0

    def _move(self, url: str, failure: str) -> None:
        """Make the next URL the current one (the same one when there is one)."""
        self._index = (self._index + 1) % len(self.endpoints)
        if len(self.endpoints) > 1:
            logger.warning("registry %s failed (%s); trying %s", url, failure, self.current)


def _answer(response: httpx.Response, maybe_applied: bool) -> httpx.Response:
    """The response of an answered request, or the refusal it carries (status 400 or more)."""
    if response.status_code < 400:
        return response
    error = error_for(response)
    error.maybe_applied = maybe_applied
    raise error
