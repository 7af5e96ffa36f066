"""``bench net``: the cost of crossing machines.

The same three-node group (rotate digits, cluster 0, real registry, real node agents with
the test timers) run twice: on loopback without TLS (the one-machine setup) and across
namespaces standing for hosts, with the registry on HTTPS in ``reg`` and nodes in hostA,
hostB, hostC over TLS. Figures: the median time between consecutive rounds that had all
three members, and the time from starting the node on hostB to the first round it trained
in (registration, warm-up, probe, join, SuperNode connect, the next round).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Protocol

from bench import BenchError, check_rounds_and_modes
from mycelium import launch
from mycelium.api import NodePublic, RoundPublic
from mycelium.client import RegistryClient
from mycelium.procs import DeadlineExceeded, wait_for

logger = logging.getLogger(__name__)

MODES = ("loopback", "tls")
MEMBERS = 3
NODE_OPTIONS: dict[str, Any] = {
    "scenario": "rotate",
    "clusters": 2,
    "cluster": 0,
    "warmup_epochs": 20,
    "log_level": "info",
    **launch.FAST_TIMERS,
}


class View(Protocol):
    def group_of(self, name: str) -> int | None: ...
    def node_round(self, name: str) -> int | None: ...
    def full_rounds(self, gid: int, members: int) -> list[RoundPublic]: ...


@dataclass(frozen=True)
class LocalView:
    """The registry on loopback, read with the ordinary client."""

    client: RegistryClient

    def _node(self, name: str) -> NodePublic | None:
        return next((n for n in self.client.list_nodes() if n.name == name), None)

    def group_of(self, name: str) -> int | None:
        node = self._node(name)
        return node.group_id if node and node.alive else None

    def node_round(self, name: str) -> int | None:
        node = self._node(name)
        return node.round if node else None

    def full_rounds(self, gid: int, members: int) -> list[RoundPublic]:
        return [r for r in self.client.get_group(gid).rounds if r.num_nodes >= members]


@dataclass(frozen=True)
class NetFigures:
    mode: str
    round_times_s: list[float]
    median_round_s: float
    founder_first_round_s: float
    hostb_first_round_s: float


# A mode starts a registry and returns (view, start_agent(host, name, index)).
Starter = Callable[[str, str, int], object]


@contextmanager
def loopback_setup(work: Path) -> Iterator[tuple[View, Starter]]:
    with ExitStack() as stack:
        registry = stack.enter_context(
            launch.registry_process(
                db=work / "registry.db", log_path=work / "registry.log", group_ttl=60, node_ttl=5
            )
        )
        client = stack.enter_context(RegistryClient(registry.url))

        def start(_host: str, name: str, index: int) -> object:
            return stack.enter_context(
                launch.agent_process(
                    work,
                    name=name,
                    registry_url=registry.url,
                    partition=f"{index}/4",
                    **NODE_OPTIONS,
                )
            )

        yield LocalView(client), start


@contextmanager
def tls_setup(work: Path, *, loss: float = 0.0, seed: int = 0) -> Iterator[tuple[View, Starter]]:
    """The lab: registry on HTTPS in ``reg``, agents on their hosts; with ``loss``, that
    share of the packets dropped on every host's link (``bench faults``) from before the
    first agent starts."""
    from mycelium.lab import faults as lab_faults
    from mycelium.lab import stack as lab
    from mycelium.lab.netns import Network, unavailable_reason

    reason = lab_faults.unavailable_reason() if loss else unavailable_reason()
    if reason:
        raise BenchError(f"network namespaces unavailable: {reason}")
    with ExitStack() as stack:
        network = stack.enter_context(Network())
        view, _, _ = stack.enter_context(lab.https_registry(network, work, group_ttl=60))
        if loss:
            faults = stack.enter_context(lab_faults.Faults(network, work))
            for host in network.hosts:
                faults.loss(host, loss)

        def start(host: str, name: str, index: int) -> object:
            return stack.enter_context(
                lab.agent_in(
                    network, host, work, view, name=name, cluster=0, index=index, seed=seed
                )
            )

        yield view, start


def measure(mode: str, work: Path, rounds: int, *, loss: float = 0.0, seed: int = 0) -> NetFigures:
    """One mode's figures; ``loss`` and ``seed`` apply to the lab (``tls``) only."""
    setup = loopback_setup(work) if mode == "loopback" else tls_setup(work, loss=loss, seed=seed)
    with setup as (view, start):
        t0 = time.monotonic()
        start("hostA", "a0", 0)
        gid = until(lambda: view.group_of("a0"), 300, "a0 founds a group")
        until(lambda: view.node_round("a0"), 300, "a0's first round")
        founder = time.monotonic() - t0
        t1 = time.monotonic()
        start("hostB", "b0", 1)
        start("hostC", "c0", 2)
        until(lambda: view.node_round("b0"), 300, "b0's first round")
        hostb = time.monotonic() - t1
        full = until(
            lambda: (r := view.full_rounds(gid, MEMBERS)) and len(r) >= rounds + 1 and r,
            120 + 90 * rounds,
            f"{rounds + 1} rounds with {MEMBERS} members",
        )
    stamps = sorted(r.reported_at for r in full)[: rounds + 1]
    times = [round(b - a, 2) for a, b in zip(stamps, stamps[1:], strict=False)]
    return NetFigures(
        mode=mode,
        round_times_s=times,
        median_round_s=round(statistics.median(times), 2),
        founder_first_round_s=round(founder, 1),
        hostb_first_round_s=round(hostb, 1),
    )


def until(condition: Callable[[], Any], timeout: float, what: str, *, interval: float = 1.0) -> Any:
    """``condition``'s first truthy value, polled every ``interval``; :class:`BenchError`
    naming ``what`` when ``timeout`` passes first."""
    try:
        return wait_for(condition, timeout=timeout, interval=interval, what=what)
    except DeadlineExceeded as exc:
        raise BenchError(str(exc)) from None


def run(
    *,
    rounds: int = 4,
    modes: Sequence[str] = MODES,
    json_path: Path | None = None,
    workdir: Path | None = None,
) -> str:
    """Measure each mode; a print-ready table back (and JSON when asked)."""
    check_rounds_and_modes(rounds, modes, MODES)
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(TemporaryDirectory(prefix="bench-net-")))
        figures = [measure(m, Path(workdir).resolve() / m, rounds) for m in modes]
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
    return _table(figures)


def _table(figures: Sequence[NetFigures]) -> str:
    lines = [
        f"3-member group, rounds between consecutive full rounds; {MEMBERS} agents, fast timers",
        "| mode | median round s | round times s | founder start -> its first round s "
        "| hostB node start -> its first round s |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for f in figures:
        times = ", ".join(f"{t:.1f}" for t in f.round_times_s)
        lines.append(
            f"| {f.mode} | {f.median_round_s:.2f} | {times} | {f.founder_first_round_s:.1f} "
            f"| {f.hostb_first_round_s:.1f} |"
        )
    return "\n".join(lines)
