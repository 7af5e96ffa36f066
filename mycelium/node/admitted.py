"""A node's side of admission and app pinning in TLS groups (docs/security.md).

- :class:`MembershipKeys`: a fresh SuperNode key pair for each membership (Flower never
  registers a key twice on one SuperLink), given to the registry with the join/migrate.
- :func:`wait_admitted`: poll the registry for the host's receipt (its Flower node id)
  with a deadline, before the SuperNode starts (one started earlier is refused).
- :class:`AppPin`: the node's own ClientApp and its FAB hash (made once), and the factory of
  the :class:`~mycelium.security.app_pin.PinnedExecutor` each pinned SuperNode start gets;
  a refused run is kept until the agent's loop acts on it (leave the group, record why).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mycelium import node_keys
from mycelium.client import RegistryClient, RegistryError
from mycelium.node_keys import NodeKeyPair
from mycelium.procs import DeadlineExceeded, wait_for

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

    from mycelium.security.app_pin import PinnedExecutor, RefusedRun

logger = logging.getLogger(__name__)

ADMISSION_TIMEOUT_S = 30.0  # the host syncs every 2 s; beyond this its SuperLink is gone
RECEIPT_POLL_S = 0.25


class MembershipKeys:
    """Key files under ``directory``, one pair per membership (never reused)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self._count = itertools.count(1)

    def fresh(self, group_id: int) -> NodeKeyPair:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        pair = node_keys.generate(
            self.directory / f"group-{group_id}-{stamp}-{next(self._count)}.key"
        )
        logger.info("new SuperNode key %s for group %s", pair.fingerprint, group_id)
        return pair


def wait_admitted(
    registry: RegistryClient,
    node_id: int,
    *,
    group_id: int,
    public_key: str,
    timeout: float = ADMISSION_TIMEOUT_S,
) -> int | None:
    """The Flower node id the group's host registered ``public_key`` as, or None (one
    warning) when no receipt came within ``timeout``."""

    def admitted() -> int | None:
        try:
            receipt = registry.admission(node_id)
        except RegistryError as exc:
            logger.debug("admission receipt not readable yet: %s", exc)
            return None
        ours = receipt.group_id == group_id and receipt.public_key == public_key
        return receipt.flower_node_id if ours and receipt.admitted else None

    started = time.monotonic()
    try:
        flower_id = wait_for(
            admitted, timeout=timeout, interval=RECEIPT_POLL_S, what="admission receipt"
        )
    except DeadlineExceeded:
        logger.warning("group %s did not admit this node within %.0f s", group_id, timeout)
        return None
    waited = time.monotonic() - started
    logger.info("admitted to group %s as Flower node %s (%.1f s)", group_id, flower_id, waited)
    return int(flower_id)


class AppPin:
    """The installed ClientApp a pinned member runs, and the runs it refused."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = Path(app_dir).resolve()
        self._lock = threading.Lock()
        self._client_app: ClientApp | None = None
        self._fab_hash: str | None = None
        self._refused: list[RefusedRun] = []

    def load(self) -> None:
        """Import our ClientApp and hash our FAB (~1.2 s, once); PinError if unusable."""
        from mycelium.security.app_pin import app_fab_hash, load_client_app

        with self._lock:
            if self._client_app is None:
                self._fab_hash = app_fab_hash(self.app_dir)
                self._client_app = load_client_app(self.app_dir)
                logger.info("pinned to our ClientApp, FAB %s", self._fab_hash[:12])

    def preload(self) -> None:
        """:meth:`load` in the background; a failure is logged (the join raises it)."""
        from mycelium.security.app_pin import PinError

        try:
            self.load()
        except PinError as exc:
            logger.error("cannot pin our ClientApp: %s", exc)

    def executor(self, runtime_address: str, secret: bytes) -> PinnedExecutor:
        """A started executor for one pinned SuperNode start (``SuperNode(pin=...)``)."""
        from mycelium.security.app_pin import PinnedExecutor

        self.load()
        assert self._client_app is not None and self._fab_hash is not None
        return PinnedExecutor(
            runtime_address,
            client_app=self._client_app,
            expected_fab_hash=self._fab_hash,
            on_refused=self._record,
            superexec_secret=secret,
        ).start()

    def _record(self, refused: RefusedRun) -> None:
        with self._lock:
            self._refused.append(refused)

    def take_refused(self) -> list[RefusedRun]:
        """The runs refused since the last call (the agent's loop leaves their group)."""
        with self._lock:
            taken, self._refused = self._refused, []
        return taken
