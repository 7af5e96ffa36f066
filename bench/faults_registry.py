"""``bench faults --scenario registry_partition``: issue 24's PostgreSQL scenario.

Two registry processes over one PostgreSQL (``registry0`` in ``reg``, ``registry1`` in
``reg2``), node agents given both URLs (``registry0`` first), real TLS Flower groups. a0
founds a group and b0 joins it; then every node host is cut from ``registry0`` with
nftables (its packets silently dropped: no refusal tells a client to move on, only its
timeout) while ``registry1`` stays reachable, and c0 starts on hostC during the cut. The
cut lasts ``cut_s`` and at least until c0 is in the group.

Checked: neither a0 nor b0 reads as expired and their longest silence stays below the node
TTL, the group reports rounds during the cut, c0 joins it through ``registry1``, nothing
fails, leaves or starts self-preservation, and a round of all three follows the heal. c0's
longest silence is reported, not bounded: between its join and its first heartbeat it
waits, silent, for the host's admission receipt, and the host's gate fails over too.

The node TTL is :data:`NODE_TTL_S`: a silent drop costs a client one request timeout
(``REGISTRY_TIMEOUT_S``, 5 s) before it moves on, so a node TTL must exceed the heartbeat
interval plus that timeout (docs/registry.md, "Failover and retried writes").

The lab's hosts share this machine's files: both processes reach PostgreSQL over its Unix
socket (:meth:`~mycelium.lab.postgres.PgServer.socket_url`); the scenario cuts the nodes'
network, not the database's.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from bench import BenchError
from bench.faults_lab import FAILED, LEFT, SP_STARTED, event_types
from bench.faults_report import Recorder, RegistryPartitionFigures, Settings
from bench.net_bench import until
from mycelium import config
from mycelium.api import RoundPublic
from mycelium.lab import postgres
from mycelium.lab.faults import Faults
from mycelium.lab.netns import Network
from mycelium.lab.stack import RegistryView, agent_in, https_registries

NODE_TTL_S = 10.0
GROUP_TTL_S = 30.0
HOSTS = ("reg", "reg2", "hostA", "hostB", "hostC")
NODE_HOSTS = ("hostA", "hostB", "hostC")
BEFORE = ("a0", "b0")  # in the group before the cut


class Silences:
    """The longest each placed node went unheard, read through one registry process."""

    def __init__(self, view: RegistryView) -> None:
        self.view = view
        self.longest: dict[str, float] = {}
        self.expired: set[str] = set()

    def read(self) -> None:
        now = time.time()
        for node in self.view.nodes():
            if node.group_id is None and node.name not in self.longest:
                continue  # not placed yet: its time before joining is not a failover
            self.longest[node.name] = max(self.longest.get(node.name, 0.0), now - node.last_seen)
            if not node.alive:
                self.expired.add(node.name)


def registry_partition(work: Path, settings: Settings, rec: Recorder) -> RegistryPartitionFigures:
    """The scenario on a PostgreSQL server of its own (fsync on, as deployed)."""
    reason = postgres.missing_reason()
    if reason is not None:
        raise BenchError(f"registry_partition needs PostgreSQL: {reason}")
    with postgres.postgres_server(fsync=True) as server:
        return registry_partition_on(server, work, rec, cut_s=2 * NODE_TTL_S, seed=settings.seed)


def registry_partition_on(
    server: postgres.PgServer, work: Path, rec: Recorder, *, cut_s: float, seed: int = 0
) -> RegistryPartitionFigures:
    """The scenario in a fresh database of ``server`` (dropped after)."""
    url = server.create_database("partition")
    with ExitStack() as stack:
        stack.callback(server.drop_database, url)
        network = stack.enter_context(Network(HOSTS))
        (view0, view), _ = stack.enter_context(
            https_registries(
                network, work, server.socket_url(url), ("reg", "reg2"),
                node_ttl=NODE_TTL_S, group_ttl=GROUP_TTL_S,
            )
        )  # fmt: skip
        urls = f"{view0.url},{view.url}"  # registry0 first: the one that will be cut

        def start(host: str, name: str, index: int) -> None:
            stack.enter_context(
                agent_in(
                    network, host, work, view, name=name, cluster=0, index=index, seed=seed,
                    registry_url=urls,
                )
            )  # fmt: skip

        start("hostA", "a0", 0)
        gid = until(lambda: view.group_of("a0"), 300, "a0 founds a group")
        start("hostB", "b0", 1)
        until(lambda: view.group_of("b0") == gid, 300, "b0 joins a0")
        until(lambda: view.full_rounds(gid, 2), 300, "a round of 2")
        since = view.events()[-1].id

        lab = stack.enter_context(Faults(network, work))
        silences = Silences(view)
        cut = [lab.partition(host, "reg") for host in NODE_HOSTS]
        cut_at = time.time()
        start("hostC", "c0", 2)  # started cut off from registry0: it must find registry1
        joined: dict[str, float] = {}

        def cut_over() -> bool:
            silences.read()
            if "c0" not in joined and view.group_of("c0") == gid:
                joined["c0"] = time.time() - cut_at
            return time.time() >= cut_at + cut_s and "c0" in joined

        until(cut_over, cut_s + 240, "c0 joins through registry1", interval=0.5)
        during = [r for r in view.group(gid).rounds if r.reported_at > cut_at]
        for fault in cut:
            fault.undo()
        healed = time.time()
        full = until(
            lambda: [r for r in view.full_rounds(gid, 3) if r.reported_at > healed],
            180, "a round of all three after the heal",
        )  # fmt: skip
        types = event_types(view.events(since))
        group = view.group(gid)
    return _checked(rec, silences, (cut_at, healed), during, types, group.status, joined, full)


def _checked(
    rec: Recorder,
    silences: Silences,
    span: tuple[float, float],
    during: list[RoundPublic],
    types: list[str],
    status: str,
    joined: dict[str, float],
    full: list[RoundPublic],
) -> RegistryPartitionFigures:
    cut_at, healed = span
    longest = {k: round(v, 1) for k, v in sorted(silences.longest.items())}
    expired = sorted(silences.expired & set(BEFORE))
    worst = max(longest.get(n, 0.0) for n in BEFORE)
    rec.check(
        f"a0 and b0 never read as expired, silent less than the node TTL ({NODE_TTL_S:.0f} s)",
        not expired and worst < NODE_TTL_S,
        f"longest silences {longest}; expired {sorted(silences.expired)}; a request to the cut "
        f"process costs {config.REGISTRY_TIMEOUT_S:.0f} s, heartbeats every 1 s",
    )
    trained = [r for r in during if r.num_nodes >= 2]
    rec.check("the group trained through the cut", bool(trained), f"{len(trained)} rounds of 2+")
    rec.check("c0 joined the group through registry1", "c0" in joined, f"{joined}")
    quiet = not (FAILED | LEFT | {SP_STARTED}) & set(types) and status == "active"
    rec.check("nothing failed, left or started self-preservation", quiet, f"{status}; {types}")
    first_full = min(r.reported_at for r in full) - healed
    return RegistryPartitionFigures(
        cut_s=round(healed - cut_at, 1), node_ttl_s=NODE_TTL_S, group_ttl_s=GROUP_TTL_S,
        client_timeout_s=config.REGISTRY_TIMEOUT_S, longest_silence_s=longest,
        late_join_s=round(joined["c0"], 1) if "c0" in joined else None,
        rounds_during_cut=len(during), full_round_after_heal_s=round(first_full, 1),
        events=types,
    )  # fmt: skip
