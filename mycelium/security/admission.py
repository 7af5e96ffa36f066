"""Admission: a group SuperLink (``--enable-supernode-auth``) accepts exactly the SuperNodes
whose keys the registry lists as the group's members.

The group host polls its member list (with its group token) and reconciles: a member whose
key is not registered yet is registered through Flower's Control API (``RegisterNode``, the
call behind ``flwr supernode register``); a registration whose member left, migrated out,
was evicted or deleted, or whose key changed, is unregistered (``UnregisterNode``). Flower
answers the next Fleet request of an unregistered SuperNode with 401 and the SuperNode
exits: a connected node is cut off within its 3 s poll. :func:`plan` is the pure rule;
:class:`Admission` applies it on a timer; :class:`ControlApiAdmin` talks to the SuperLink
on loopback. When the registry cannot be read, nothing changes (no new admissions, no
evictions) until it can.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from mycelium.node_keys import NodeKeyError, control_api_bytes, normalize_public_key

if TYPE_CHECKING:
    from flwr.supercore.control import ControlHttpClient

logger = logging.getLogger(__name__)

DEFAULT_SYNC_INTERVAL = 2.0  # s between member-list polls (join latency <= this + ~30 ms)
CONTROL_TIMEOUT = 10.0
KEY_ALREADY_USED = 23  # flwr ApiErrorCode.PUBLIC_KEY_ALREADY_IN_USE
NODE_NOT_FOUND = 24  # flwr ApiErrorCode.NODE_NOT_FOUND

T = TypeVar("T")


class AdmissionError(RuntimeError):
    """The SuperLink's Control API failed (retried at the next sync)."""


class KeyAlreadyUsed(AdmissionError):
    """The SuperLink saw this key before (Flower never re-registers a key): the node must
    make a new key pair for this membership."""


class NodeNotFound(AdmissionError):
    """The SuperLink has no registered node with that id (already unregistered)."""


@dataclass(frozen=True)
class Member:
    """A registry member of the group and the public key it gave (OpenSSH line)."""

    node_id: int
    public_key: str


@dataclass(frozen=True)
class Registration:
    """A member key registered on the SuperLink, and the Flower node id it got."""

    node_id: int
    public_key: str
    flower_node_id: int


@dataclass(frozen=True)
class Plan:
    register: tuple[Member, ...] = ()
    unregister: tuple[Registration, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.register or self.unregister)


def plan(
    members: Iterable[Member],
    registered: Mapping[int, Registration],
    *,
    refused: frozenset[tuple[int, str]] = frozenset(),
) -> Plan:
    """What to change so that the registered keys are exactly the members' keys.

    ``registered`` maps registry node ids to their registration; ``refused`` holds the
    ``(node_id, key)`` pairs the SuperLink refused for good (key seen before), which are
    not retried until the member rotates its key.
    """
    wanted = {m.node_id: m for m in members}
    stale = tuple(
        reg
        for node_id, reg in sorted(registered.items())
        if node_id not in wanted or wanted[node_id].public_key != reg.public_key
    )
    kept = {reg.node_id for reg in registered.values()} - {reg.node_id for reg in stale}
    new = tuple(
        m
        for node_id, m in sorted(wanted.items())
        if node_id not in kept and (node_id, m.public_key) not in refused
    )
    return Plan(register=new, unregister=stale)


class SuperLinkAdmin(Protocol):
    """Registers and unregisters SuperNode keys on one SuperLink."""

    def register(self, public_key: str) -> int: ...

    def unregister(self, flower_node_id: int) -> None: ...


class ControlApiAdmin:
    """Flower's Control API client (``ControlHttpClient``, what the ``flwr`` CLI uses),
    reaching the SuperLink on loopback over TLS. A call takes ~20-30 ms; the ``flwr
    supernode register`` CLI takes 1.7-4.5 s (a Python start and flwr's imports)."""

    def __init__(
        self, address: str, *, root_certificates: Path, timeout: float = CONTROL_TIMEOUT
    ) -> None:
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        self.address = address
        self._client: ControlHttpClient = ControlHttpClient(
            f"https://{address}",
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
            verify=ssl.create_default_context(cafile=str(Path(root_certificates).absolute())),
            timeout=timeout,
        )

    def register(self, public_key: str) -> int:
        """Register an OpenSSH public key line; return the Flower node id it gets."""
        from flwr.proto.control_pb2 import RegisterNodeRequest

        request = RegisterNodeRequest(public_key=control_api_bytes(public_key))
        response = self._call("register", lambda: self._client.RegisterNode(request))
        return int(response.node_id)

    def unregister(self, flower_node_id: int) -> None:
        """Unregister a node id; :class:`NodeNotFound` when it is not registered."""
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        request = UnregisterNodeRequest(node_id=flower_node_id)
        self._call("unregister", lambda: self._client.UnregisterNode(request))

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import httpx
        from flwr.supercore.error import FlowerError

        try:
            return fn()
        except httpx.HTTPStatusError as exc:
            error = FlowerError.from_json(exc.response.text)
            code = int(error.code) if error is not None else None
            if code == KEY_ALREADY_USED:
                raise KeyAlreadyUsed("the SuperLink has seen this key before") from None
            if code == NODE_NOT_FOUND:
                raise NodeNotFound(f"{what}: no such node on {self.address}") from None
            detail = error.message if error is not None else exc.response.reason_phrase
            status = exc.response.status_code
            raise AdmissionError(f"{what} on {self.address}: HTTP {status} {detail}") from None
        except httpx.HTTPError as exc:
            raise AdmissionError(f"{what} on {self.address}: {exc}") from None


MembersFn = Callable[[], Sequence[Member] | None]


class Admission:
    """Keeps ``admin``'s registered keys equal to ``members()`` (see the module docstring).

    ``members`` returns the registry's current members with their keys, or None when the
    registry cannot be read. ``on_change(registered)`` gets the new mapping after every
    sync that changed something (e.g. to publish members' Flower node ids).
    """

    def __init__(
        self,
        admin: SuperLinkAdmin,
        members: MembersFn,
        *,
        interval: float = DEFAULT_SYNC_INTERVAL,
        on_change: Callable[[Mapping[int, Registration]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admin = admin
        self.interval = interval
        self._members = members
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._registered: dict[int, Registration] = {}
        self._refused: set[tuple[int, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_sync_at: float | None = None

    @property
    def registered(self) -> dict[int, Registration]:
        with self._lock:
            return dict(self._registered)

    def flower_node_id(self, node_id: int) -> int | None:
        reg = self.registered.get(node_id)
        return reg.flower_node_id if reg else None

    def sync(self) -> Plan:
        """One reconcile; returns the plan it applied (failed steps are retried next time)."""
        listed = self._members()
        if listed is None:
            return Plan()
        with self._lock:
            todo = plan(_valid(listed), self._registered, refused=frozenset(self._refused))
            for reg in todo.unregister:
                self._unregister(reg)
            for member in todo.register:
                self._register(member)
            self.last_sync_at = self._clock()
            snapshot = dict(self._registered)
        if todo and self._on_change is not None:
            self._on_change(snapshot)
        return todo

    def unregister_all(self) -> None:
        """Unregister every admitted key (the host stops; errors are logged)."""
        with self._lock:
            for reg in list(self._registered.values()):
                self._unregister(reg)

    def _register(self, member: Member) -> None:
        try:
            flower_id = self.admin.register(member.public_key)
        except KeyAlreadyUsed:
            self._refused.add((member.node_id, member.public_key))
            logger.warning(
                "node %s: its key was used on this SuperLink before; it must rotate its "
                "key to be admitted",
                member.node_id,
            )
            return
        except AdmissionError as exc:
            logger.warning("node %s not admitted yet: %s", member.node_id, exc)
            return
        self._registered[member.node_id] = Registration(
            member.node_id, member.public_key, flower_id
        )
        logger.info("node %s admitted as flower node %s", member.node_id, flower_id)

    def _unregister(self, reg: Registration) -> None:
        try:
            self.admin.unregister(reg.flower_node_id)
        except NodeNotFound:
            logger.info("node %s was no longer registered", reg.node_id)
        except AdmissionError as exc:
            logger.warning("node %s still registered: %s", reg.node_id, exc)
            return
        del self._registered[reg.node_id]
        logger.info("node %s (flower node %s) unregistered", reg.node_id, reg.flower_node_id)

    # -- timer ------------------------------------------------------------------------------
    def start(self) -> Admission:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="admission", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep admitting; the next sync retries
                logger.exception("admission sync failed")
            if self._stop.wait(self.interval):
                return


def _valid(members: Iterable[Member]) -> list[Member]:
    """Members with a usable key, in canonical form; bad keys are logged and skipped."""
    valid = []
    for member in members:
        try:
            valid.append(Member(member.node_id, normalize_public_key(member.public_key)))
        except NodeKeyError as exc:
            logger.warning("node %s has an unusable key: %s", member.node_id, exc)
    return valid
