"""Faults in the lab (:mod:`mycelium.lab.netns`), each named by what it does and to whom,
each undone: tests and benches read as scenarios.

    with Faults(network, work) as lab:
        lab.track(registry)                        # a lab process, known by its name
        with lab.partition("hostB", "reg"):        # hostB and reg cannot reach each other
            ...
        with lab.loss("hostC", 0.05):              # 5% of hostC's packets vanish, each way
            ...
        lab.kill("registry"); lab.restart("registry")

The kernel's own tools do the work (:mod:`mycelium.lab.links`): nftables rules in the
lab's switch for loss (``numgen random``) and partitions (address matches), ``tc tbf`` on
both ends of a host's link for bandwidth, ``tc netem`` for latency where the kernel has it,
otherwise a TCP relay (:mod:`mycelium.lab.relay`) in the host that delays and paces each
direction of one service (callers dial :attr:`Applied.address`; :attr:`Applied.method`
says which ran). Processes get signals: SIGSTOP/SIGCONT (hang), SIGKILL (kill), and
restart runs the same command line again (so the same port).

Each fault call applies at once and returns an :class:`Applied`: a context manager, or
``undo()``. Whatever is still applied when the lab exits is undone then; :func:`leftovers`
shows what a namespace still holds (nothing, after).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mycelium.lab.links import (
    FaultError,
    has_netem,
    leftovers,
    link_queues,
    loss_rules,
    missing_tool,
    netem_params,
    partition_rules,
    switch_rules,
    tbf_params,
)
from mycelium.lab.netns import Network
from mycelium.lab.netns import unavailable_reason as netns_unavailable_reason
from mycelium.lab.relay import listening_address
from mycelium.procs import DeadlineExceeded, ManagedProcess, descendant_pids, wait_for

__all__ = [
    "Applied", "Bandwidth", "Direction", "Fault", "FaultError", "Faults", "Hang", "Latency",
    "Loss", "Partition", "leftovers", "unavailable_reason",
]  # fmt: skip
RELAY = Path(__file__).resolve().parent / "relay.py"
Direction = Literal["both", "in", "out"]


@dataclass(frozen=True)
class Loss:
    """A ``share`` of the packets on ``host``'s link dropped at random: ``in`` (to the
    host), ``out`` (from it) or ``both`` (each way on its own draw)."""

    host: str
    share: float
    direction: Direction = "both"

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"loss share must be within [0, 1], not {self.share}")
        if self.direction not in ("both", "in", "out"):
            raise ValueError(f"direction must be both, in or out, not {self.direction!r}")


@dataclass(frozen=True)
class Partition:
    """``a`` and ``b`` cannot reach each other; ``oneway``: only what ``a`` sends to ``b``
    is dropped (``b`` still reaches ``a``, though TCP, which needs both ways, fails)."""

    a: str
    b: str
    oneway: bool = False

    def __post_init__(self) -> None:
        if self.a == self.b:
            raise ValueError("a partition needs two different hosts")


@dataclass(frozen=True)
class Bandwidth:
    """``host``'s link carries at most ``bits_per_s`` in each direction."""

    host: str
    bits_per_s: int

    def __post_init__(self) -> None:
        if self.bits_per_s < 8000:
            raise ValueError(f"bandwidth below 8 kbit/s is not a link: {self.bits_per_s}")


@dataclass(frozen=True)
class Latency:
    """What reaches ``host``'s service on ``port`` and its answers each arrive ``delay_s``
    later; ``bits_per_s`` also paces each direction. With netem the whole link is delayed;
    with the relay only connections made to the relay's address."""

    host: str
    port: int
    delay_s: float
    bits_per_s: int | None = None

    def __post_init__(self) -> None:
        if self.delay_s < 0:
            raise ValueError(f"delay must not be negative: {self.delay_s}")
        if self.bits_per_s is not None and self.bits_per_s < 8000:
            raise ValueError(f"pacing below 8 kbit/s is not a link: {self.bits_per_s}")


@dataclass(frozen=True)
class Hang:
    """The lab process ``process`` and its descendants stopped (SIGSTOP) until undone."""

    process: str


Fault = Loss | Partition | Bandwidth | Latency | Hang


class Applied:
    """One applied fault: undone by :meth:`undo`, by leaving its ``with`` block, or when
    the lab exits. ``method`` names the tool that ran (``nftables``, ``tbf``, ``netem``,
    ``relay``, ``signal``); ``address`` is what to dial for a latency fault."""

    def __init__(
        self,
        fault: Fault,
        method: str,
        undo: Callable[[], None],
        *,
        address: str | None = None,
        on_undo: Callable[[Applied], None] = lambda _: None,
    ) -> None:
        self.fault = fault
        self.method = method
        self.address = address
        self._undo: Callable[[], None] | None = undo
        self._on_undo = on_undo

    @property
    def active(self) -> bool:
        return self._undo is not None

    def undo(self) -> None:
        """Remove the fault (a second call does nothing)."""
        undo, self._undo = self._undo, None
        if undo is not None:
            try:
                undo()
            finally:
                self._on_undo(self)

    def __enter__(self) -> Applied:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"Applied({self.fault!r}, method={self.method!r}, active={self.active})"


def unavailable_reason() -> str | None:
    """Why faults cannot be made here (no namespaces, no root, no nft or tc), or None."""
    return netns_unavailable_reason() or missing_tool()


class Faults:
    """Faults on ``network``'s hosts and on the lab processes it tracks; a context manager
    that undoes, on exit, every fault still applied. Relay logs go under ``work``."""

    def __init__(self, network: Network, work: Path) -> None:
        self.network = network
        self.work = work
        self.processes: dict[str, ManagedProcess] = {}
        self._ready: dict[str, Callable[[], object]] = {}
        self._applied: list[Applied] = []
        self._count = 0
        self._netem: bool | None = None

    def __enter__(self) -> Faults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo_all()

    def undo_all(self) -> None:
        """Undo every fault still applied, newest first; raise the first failure after
        trying them all."""
        errors = []
        for applied in reversed(list(self._applied)):
            try:
                applied.undo()
            except FaultError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    @property
    def applied(self) -> list[Applied]:
        return list(self._applied)

    # -- the network ----------------------------------------------------------------------
    def loss(self, host: str, share: float, direction: Direction = "both") -> Applied:
        return self.apply(Loss(host, share, direction))

    def partition(self, a: str, b: str, *, oneway: bool = False) -> Applied:
        return self.apply(Partition(a, b, oneway))

    def bandwidth(self, host: str, bits_per_s: int) -> Applied:
        return self.apply(Bandwidth(host, bits_per_s))

    def latency(
        self, host: str, delay_s: float, *, port: int, bits_per_s: int | None = None
    ) -> Applied:
        return self.apply(Latency(host, port, delay_s, bits_per_s))

    def hang(self, process: str) -> Applied:
        return self.apply(Hang(process))

    def apply(self, fault: Fault) -> Applied:
        """Apply ``fault`` now; the handle undoes it."""
        for host in _hosts_of(fault):
            if host not in self.network.hosts:
                raise FaultError(f"{fault}: the lab has no host {host!r}")
        net = self.network
        if isinstance(fault, Loss):
            rules = loss_rules(net, fault.host, fault.share, fault.direction)
            applied = self._made(fault, "nftables", switch_rules(net, rules))
        elif isinstance(fault, Partition):
            rules = partition_rules(net, fault.a, fault.b, oneway=fault.oneway)
            applied = self._made(fault, "nftables", switch_rules(net, rules))
        elif isinstance(fault, Bandwidth):
            undo = link_queues(net, fault.host, "tbf", tbf_params(fault.bits_per_s))
            applied = self._made(fault, "tbf", undo)
        elif isinstance(fault, Latency):
            applied = self._latency(fault)
        else:
            applied = self._hang(fault)
        self._applied.append(applied)
        return applied

    def _forget(self, applied: Applied) -> None:
        if applied in self._applied:
            self._applied.remove(applied)

    def _made(
        self, fault: Fault, method: str, undo: Callable[[], None], address: str | None = None
    ) -> Applied:
        return Applied(fault, method, undo, address=address, on_undo=self._forget)

    @property
    def netem(self) -> bool:
        """Whether this kernel has ``tc netem`` (probed once)."""
        if self._netem is None:
            self._netem = has_netem(self.network)
        return self._netem

    def _latency(self, fault: Latency) -> Applied:
        service = f"{self.network[fault.host].address}:{fault.port}"
        if self.netem:
            params = netem_params(fault.delay_s, fault.bits_per_s)
            undo = link_queues(self.network, fault.host, "netem", params)
            return self._made(fault, "netem", undo, service)
        self._count += 1
        listen = f"{self.network[fault.host].address}:0"
        args = [sys.executable, str(RELAY), "--listen", listen, "--to", service]
        args += ["--delay", str(fault.delay_s)]
        if fault.bits_per_s:
            args += ["--rate", str(fault.bits_per_s / 8)]
        name = f"relay:{fault.host}:{fault.port}"
        log = self.work / f"relay-{fault.host}-{fault.port}-{self._count}.log"
        relay = ManagedProcess(name, self.network.command(fault.host, args), log_path=log)
        relay.start()
        try:
            line = wait_for(
                lambda: relay.is_running() and listening_address(relay.read_log()),
                timeout=30,
                what=f"relay for {service}",
            )
        except DeadlineExceeded as exc:
            relay.stop(timeout=5)
            raise FaultError(f"{fault}: the relay did not start: {relay.read_log()}") from exc
        except BaseException:
            relay.stop(timeout=5)
            raise

        def stop_relay() -> None:
            relay.stop(timeout=5)

        return self._made(fault, "relay", stop_relay, str(line))

    # -- processes ------------------------------------------------------------------------
    def track(
        self, proc: ManagedProcess, *, ready: Callable[[], object] | None = None
    ) -> ManagedProcess:
        """Know ``proc`` by its name; ``ready`` (polled after a restart) says it serves."""
        self.processes[proc.name] = proc
        if ready is not None:
            self._ready[proc.name] = ready
        return proc

    def _process(self, name: str) -> ManagedProcess:
        try:
            return self.processes[name]
        except KeyError:
            raise FaultError(f"the lab tracks no process {name!r}") from None

    def _tree(self, name: str) -> list[int]:
        proc = self._process(name)
        if not proc.is_running() or proc.pid is None:
            raise FaultError(f"process {name!r} is not running")
        return [proc.pid, *descendant_pids(proc.pid)]

    def _hang(self, fault: Hang) -> Applied:
        pids = self._tree(fault.process)
        _signal(pids, signal.SIGSTOP)

        def resume() -> None:
            _signal(pids, signal.SIGCONT)
            _settle(pids, stopped=False)

        applied = self._made(fault, "signal", resume)
        try:
            _settle(pids, stopped=True)
        except BaseException:
            applied.undo()
            raise
        return applied

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything it started, as a crash would (no undo:
        :meth:`restart` brings it back)."""
        pids = self._tree(name)
        _signal(pids, signal.SIGKILL)
        proc = self._process(name)
        wait_for(lambda: not proc.is_running(), timeout=10, what=f"{name} dies")

    def restart(self, name: str, *, timeout: float = 60.0) -> ManagedProcess:
        """Stop what is left of the process, start its same command line (so the same
        port), and wait until its ``ready`` check passes."""
        proc = self._process(name)
        for applied in list(self._applied):
            if isinstance(applied.fault, Hang) and applied.fault.process == name:
                applied.undo()  # a stopped process would not see its SIGTERM
        proc.stop(timeout=10)
        proc.start()
        ready = self._ready.get(name)
        if ready is not None:
            wait_for(
                lambda: proc.is_running() and ready(),
                timeout=timeout,
                interval=0.2,
                what=f"{name} serves again",
            )
        return proc


def _hosts_of(fault: Fault) -> list[str]:
    if isinstance(fault, Partition):
        return [fault.a, fault.b]
    return [] if isinstance(fault, Hang) else [fault.host]


def _stopped(pid: int) -> bool | None:
    """Whether ``pid`` is stopped by a signal (None: gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return None


def _settle(pids: list[int], *, stopped: bool) -> None:
    """Wait until every process in ``pids`` that still lives is (not) stopped: signals are
    delivered asynchronously."""
    wait_for(
        lambda: all(_stopped(pid) in (stopped, None) for pid in pids),
        timeout=10,
        interval=0.01,
        what="processes " + ("stopped" if stopped else "running again"),
    )


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
