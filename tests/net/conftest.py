"""Fixtures of the across-machines tests: a private namespace network, skipped with the
reason where namespaces cannot be made."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from mycelium.lab.netns import Network, unavailable_reason


@pytest.fixture(scope="session")
def netns_reason() -> str | None:
    return unavailable_reason()


@pytest.fixture
def network(netns_reason: str | None) -> Iterator[Network]:
    """Namespaces reg, hostA, hostB, hostC on one bridge; torn down after the test."""
    if netns_reason:
        pytest.skip(f"network namespaces unavailable: {netns_reason}")
    with Network() as net:
        yield net


# A group host off loopback runs Debian's nginx as its Fleet front (docs/security.md).
needs_nginx = pytest.mark.skipif(
    shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None,
    reason="nginx is not installed (Debian: apt-get install nginx-light)",
)
