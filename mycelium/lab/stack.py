"""A lab network of hosts in namespaces (see :mod:`mycelium.lab.netns`): the real
registry on HTTPS in ``reg``, real node agents on their hosts, and a read-only view of the
registry taken from inside a host. Used by the across-machines tests and ``bench net``.

Nothing here opens a socket from the calling process: the view runs ``probe.py`` inside a
namespace, the processes run under ``ip netns exec``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict, TypeVar, Unpack

from pydantic import TypeAdapter

from mycelium.api import (
    EventPage,
    EventPublic,
    GroupDetail,
    GroupPublic,
    Health,
    NodePublic,
    RoundPublic,
)  # fmt: skip
from mycelium.lab.netns import Network
from mycelium.launch import FAST_TIMERS, node_command, registry_command
from mycelium.net.certs import NetworkCerts, write_network_certs
from mycelium.procs import ManagedProcess, descendant_pids, wait_for

T = TypeVar("T")
_GROUPS = TypeAdapter(list[GroupPublic])
_DETAIL = TypeAdapter(GroupDetail)
_NODES = TypeAdapter(list[NodePublic])
_EVENTS = TypeAdapter(EventPage)


@dataclass(frozen=True)
class RegistryView:
    """GETs against the registry, made from inside ``host``."""

    network: Network
    host: str
    url: str
    ca: Path

    def text(self, path: str) -> str:
        """``GET path`` from inside the host: the body of its 200 answer."""
        got = self.network.probe(self.host, "get", f"{self.url}{path}", "--ca", self.ca)
        if got.get("status") != 200:
            raise AssertionError(f"GET {path} from {self.host}: {got}")
        return str(got["body"])

    def get(self, path: str, answer: TypeAdapter[T]) -> T:
        """``GET path`` from inside the host, its body parsed as ``answer``."""
        return answer.validate_json(self.text(path))

    def groups(self, *, include_dead: bool = False) -> list[GroupPublic]:
        dead = "&include_dead=true" if include_dead else ""
        return self.get(f"/groups?limit=100{dead}", _GROUPS)

    def group(self, gid: int) -> GroupDetail:
        return self.get(f"/groups/{gid}", _DETAIL)

    def nodes(self) -> list[NodePublic]:
        return self.get("/nodes", _NODES)

    def group_of(self, name: str) -> int | None:
        node = next((n for n in self.nodes() if n.name == name), None)
        return node.group_id if node and node.alive else None

    def node_round(self, name: str) -> int | None:
        node = next((n for n in self.nodes() if n.name == name), None)
        return node.round if node else None

    def full_rounds(self, gid: int, members: int) -> list[RoundPublic]:
        """Rounds of ``gid`` that had ``members`` nodes or more."""
        return [r for r in self.group(gid).rounds if r.num_nodes >= members]

    def health(self) -> Health:
        return Health.model_validate_json(self.text("/health"))

    def events(self, since: int = 0) -> list[EventPublic]:
        """The registry's events after id ``since`` (up to 1000)."""
        return self.get(f"/events?since={since}&limit=1000", _EVENTS).events


def registry_in(
    network: Network,
    host: str,
    work: Path,
    certs: NetworkCerts,
    *,
    db: Path | str,
    name: str = "registry",
    log_name: str | None = None,
    node_ttl: float = 5,
    group_ttl: float = 15,
) -> tuple[ManagedProcess, str]:
    """A registry process in ``host`` on HTTPS over ``db`` (a SQLite file or a PostgreSQL
    URL), logging to ``work/LOG_NAME.log`` (default: its name), not started yet; its URL."""
    address = network[host].address
    port = network.free_port(host)
    args = registry_command(
        port=port,
        db=db,
        host=address,
        ssl_certfile=certs.server_cert,
        ssl_keyfile=certs.server_key,
        node_ttl=node_ttl,
        group_ttl=group_ttl,
        log_level="info",
    )
    proc = ManagedProcess(
        name, network.command(host, args), log_path=work / f"{log_name or name}.log"
    )
    return proc, f"https://{address}:{port}"


def wait_serving(view: RegistryView, proc: ManagedProcess) -> None:
    """Until ``proc`` answers ``/health`` as healthy from inside the view's host."""
    wait_for(
        lambda: (
            proc.is_running()
            and view.network.probe(view.host, "health", view.url, "--ca", view.ca)["healthy"]
        ),
        timeout=60,
        interval=0.5,
        what=f"{proc.name} answers over HTTPS",
    )


@contextmanager
def https_registry(
    network: Network,
    work: Path,
    *,
    node_ttl: float = 5,
    group_ttl: float = 15,
    view_host: str = "hostB",
) -> Iterator[tuple[RegistryView, NetworkCerts, ManagedProcess]]:
    """The real registry in ``reg`` on HTTPS with a fresh network CA; a view from
    ``view_host``."""
    certs = write_network_certs(work / "certs", [network["reg"].address])
    proc, url = registry_in(
        network, "reg", work, certs, db=work / "registry.db", log_name="reg",
        node_ttl=node_ttl, group_ttl=group_ttl,
    )  # fmt: skip
    view = RegistryView(network, view_host, url, certs.ca.resolve())
    proc.start()
    try:
        wait_serving(view, proc)
        yield view, certs, proc
    finally:
        proc.stop()


@contextmanager
def https_registries(
    network: Network,
    work: Path,
    db: str,
    hosts: Sequence[str],
    *,
    node_ttl: float = 5,
    group_ttl: float = 15,
    view_host: str = "hostB",
) -> Iterator[tuple[list[RegistryView], list[ManagedProcess]]]:
    """One registry process in each of ``hosts`` over the PostgreSQL database ``db``, on
    HTTPS with one network CA (its certificate names every host); a view of each from
    ``view_host``. Processes are named ``registry0``, ``registry1``, ..."""
    certs = write_network_certs(work / "certs", [network[h].address for h in hosts])
    made = [
        registry_in(
            network, host, work, certs, db=db, name=f"registry{i}", node_ttl=node_ttl,
            group_ttl=group_ttl,
        )
        for i, host in enumerate(hosts)
    ]  # fmt: skip
    views = [RegistryView(network, view_host, url, certs.ca.resolve()) for _, url in made]
    procs = [proc for proc, _ in made]
    try:
        for view, proc in zip(views, procs, strict=True):
            proc.start()
            wait_serving(view, proc)
        yield views, procs
    finally:
        for proc in procs:
            proc.stop()


class AgentOptions(TypedDict):
    """What tells one lab agent from another (see :func:`agent_process`)."""

    name: str
    cluster: int
    index: int
    clusters: NotRequired[int]  # default 2
    partitions: NotRequired[int]  # default 4
    seed: NotRequired[int]  # default 0
    registry_url: NotRequired[str]  # default: the view's URL (a comma list for failover)


def agent_process(
    network: Network, host: str, work: Path, view: RegistryView, **agent: Unpack[AgentOptions]
) -> ManagedProcess:
    """A real node agent inside ``host`` that founds groups on the host's address
    (``seed``: of its data split and model), not started yet (a restart runs it again)."""
    name = agent["name"]
    args = node_command(
        name=name,
        work_dir=(work / name).resolve(),
        registry_url=agent.get("registry_url", view.url),
        registry_ca=view.ca,
        host=network[host].address,
        scenario="rotate",
        clusters=agent.get("clusters", 2),
        cluster=agent["cluster"],
        partition=f"{agent['index']}/{agent.get('partitions', 4)}",
        seed=agent.get("seed", 0),
        warmup_epochs=20,
        log_level="info",
        **FAST_TIMERS,
    )
    return ManagedProcess(name, network.command(host, args), log_path=work / f"{name}.log")


@contextmanager
def agent_in(
    network: Network, host: str, work: Path, view: RegistryView, **agent: Unpack[AgentOptions]
) -> Iterator[ManagedProcess]:
    """:func:`agent_process` started, stopped on exit."""
    proc = agent_process(network, host, work, view, **agent)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(timeout=30)


def crash(proc: ManagedProcess) -> None:
    """kill -9 an agent and everything it started, as a machine crash would."""
    assert proc.pid is not None
    for pid in [proc.pid, *descendant_pids(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
