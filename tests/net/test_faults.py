"""The lab's faults (mycelium.lab.faults) do what they say, measured with real traffic
between namespaces, and leave nothing behind.

Every packet below is sent by a process inside a namespace (``tests/net/meter.py``); the
tolerances are wide enough for chance and narrow enough that no fault passes by accident
(200 probes at 50% loss: 100 expected, the bounds are 3 standard deviations out and more).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mycelium.lab.faults import (
    Bandwidth,
    FaultError,
    Faults,
    Latency,
    Loss,
    Partition,
    leftovers,
    unavailable_reason,
)
from mycelium.lab.netns import Network
from mycelium.lab.stack import https_registry
from mycelium.procs import ManagedProcess, wait_for

METER = Path(__file__).with_name("meter.py")
PROBES = 200


@pytest.fixture(scope="module")
def faults_reason() -> str | None:
    return unavailable_reason()


@pytest.fixture(scope="module")
def net(faults_reason: str | None) -> Iterator[Network]:
    """One network for the module (each test undoes its faults and checks that it did)."""
    if faults_reason:
        pytest.skip(f"lab faults unavailable: {faults_reason}")
    with Network(("hostA", "hostB", "hostC")) as network:
        yield network


@pytest.fixture
def lab(net: Network, tmp_path: Path) -> Iterator[Faults]:
    with Faults(net, tmp_path) as faults:
        yield faults
    assert leftovers(net) == {}


def meter(net: Network, host: str, *args: object, timeout: float = 30) -> dict:
    proc = net.run(host, [sys.executable, str(METER), *map(str, args)], timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextmanager
def background(net: Network, host: str, *args: object) -> Iterator[subprocess.Popen[str]]:
    """``meter.py ARGS`` running inside ``host``, yielded once it says it is ready."""
    argv = net.command(host, [sys.executable, str(METER), *map(str, args)])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def answer(proc: subprocess.Popen[str]) -> dict:
    """The last JSON line of a background meter that finishes on its own."""
    out, _ = proc.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


def http_server(net: Network, host: str, port: int, work: Path) -> ManagedProcess:
    args = [sys.executable, "-m", "http.server", "--bind", net[host].address, str(port),
            "--directory", str(work)]  # fmt: skip
    return ManagedProcess("web", net.command(host, args), log_path=work / "web.log")


def test_fault_values_check_themselves_and_unknown_targets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Loss("hostA", 1.5)
    with pytest.raises(ValueError):
        Loss("hostA", 0.1, "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Partition("hostA", "hostA")
    with pytest.raises(ValueError):
        Bandwidth("hostA", 100)
    with pytest.raises(ValueError):
        Latency("hostA", 80, -0.1)
    network = Network(("hostA",))  # never started: nothing is made before the checks
    faults = Faults(network, tmp_path)
    with pytest.raises(FaultError, match="no host 'reg'"):
        faults.partition("hostA", "reg")
    with pytest.raises(FaultError, match="no process 'web'"):
        faults.hang("web")
    with pytest.raises(FaultError, match="no process 'web'"):
        faults.restart("web")


def test_loss_drops_the_share_it_names(net: Network, lab: Faults) -> None:
    port = net.free_port("hostC")
    target = (net["hostC"].address, port, PROBES)
    with background(net, "hostC", "udp-echo", net["hostC"].address, port):
        assert meter(net, "hostA", "udp-probe", *target)["answered"] == PROBES
        with lab.loss("hostC", 0.0) as nothing:
            assert nothing.method == "nftables"
            assert meter(net, "hostA", "udp-probe", *target)["answered"] == PROBES
        with lab.loss("hostC", 0.5, "in"):  # one draw per round trip: 50% lost
            lost_in = 1 - meter(net, "hostA", "udp-probe", *target)["answered"] / PROBES
        with lab.loss("hostC", 0.5):  # a draw each way: 1 - 0.5 * 0.5 = 75% lost
            lost_both = 1 - meter(net, "hostA", "udp-probe", *target)["answered"] / PROBES
        assert meter(net, "hostA", "udp-probe", *target)["answered"] == PROBES
    print(f"loss 0.5 in: {lost_in:.3f} of round trips lost; 0.5 both ways: {lost_both:.3f}")
    assert 0.30 <= lost_in <= 0.70
    assert 0.60 <= lost_both <= 0.90


def _udp_across(net: Network, sender: str, receiver: str, count: int = 50) -> int:
    port = net.free_port(receiver)
    with background(net, receiver, "udp-sink", net[receiver].address, port, 1.0) as sink:
        meter(net, sender, "udp-send", net[receiver].address, port, count)
        return int(answer(sink)["received"])


def test_partition_blocks_both_ways_or_one_way(net: Network, lab: Faults) -> None:
    with lab.partition("hostA", "hostB", oneway=True):
        assert _udp_across(net, "hostA", "hostB") == 0
        assert _udp_across(net, "hostB", "hostA") == 50
        assert _udp_across(net, "hostC", "hostB") == 50  # only the pair is cut
    with lab.partition("hostA", "hostB"):
        assert _udp_across(net, "hostA", "hostB") == 0
        assert _udp_across(net, "hostB", "hostA") == 0
    assert _udp_across(net, "hostA", "hostB") == 50


def _mbit_s(
    net: Network, sender: str, receiver: str, size: int, port: int = 0, to: str | None = None
) -> float:
    """Throughput of one TCP transfer of ``size`` bytes, as the receiver saw it (the sender
    dials ``to`` when given, e.g. a relay in front of the receiver's ``port``)."""
    port = port or net.free_port(receiver)
    with background(net, receiver, "tcp-sink", net[receiver].address, port) as sink:
        host, dial = (to or f"{net[receiver].address}:{port}").rsplit(":", 1)
        meter(net, sender, "tcp-send", host, dial, size)
        got = answer(sink)
    assert got["bytes"] == size
    return size * 8 / got["seconds"] / 1e6


def test_bandwidth_caps_each_direction_of_the_link(net: Network, lab: Faults) -> None:
    free = _mbit_s(net, "hostC", "hostA", 4_000_000)
    with lab.bandwidth("hostC", 8_000_000) as limit:
        assert limit.method == "tbf"
        out = _mbit_s(net, "hostC", "hostA", 1_000_000)  # hostC sends: its eth0's queue
        into = _mbit_s(net, "hostA", "hostC", 1_000_000)  # hostC receives: the switch's
    print(f"unlimited {free:.0f} Mbit/s; tbf 8 Mbit/s: out {out:.2f}, in {into:.2f}")
    assert free > 80
    for measured in (out, into):
        assert 4.0 <= measured <= 8.8


def test_latency_delays_each_direction_and_says_which_tool_ran(
    net: Network, lab: Faults, tmp_path: Path
) -> None:
    port = net.free_port("hostA")
    web = http_server(net, "hostA", port, tmp_path).start()
    try:
        wait_for(lambda: "seconds" in _get(net, port), timeout=20, what="web answers")
        direct = meter(net, "hostB", "get", net["hostA"].address, port, 5)["seconds"]
        with lab.latency("hostA", 0.1, port=port) as slow:
            assert slow.method == ("netem" if lab.netem else "relay")
            host, dial = str(slow.address).rsplit(":", 1)
            delayed = meter(net, "hostB", "get", host, dial, 5)["seconds"]
    finally:
        web.stop(timeout=5)
    ms = {name: statistics.median(times) * 1000 for name, times in (("direct", direct),
          ("delayed", delayed))}  # fmt: skip
    print(f"GET median direct {ms['direct']:.1f} ms, through {slow.method} (0.1 s each way) "
          f"{ms['delayed']:.1f} ms")  # fmt: skip
    assert statistics.median(direct) < 0.1
    assert min(delayed) >= 0.2  # the request and its answer each waited 0.1 s
    assert statistics.median(delayed) < 0.2 + 0.4 + (0.2 if lab.netem else 0)


def test_relay_paces_what_it_delays(net: Network, lab: Faults) -> None:
    port = net.free_port("hostA")
    with lab.latency("hostA", 0.05, port=port, bits_per_s=8_000_000) as paced:
        if paced.method != "relay":
            pytest.skip("netem ran: the relay's pacing is not in use here")
        rate = _mbit_s(net, "hostB", "hostA", 1_000_000, port, paced.address)
    print(f"relay paced at 8 Mbit/s: {rate:.2f} Mbit/s")
    assert 4.0 <= rate <= 8.8


def _get(net: Network, port: int, timeout: float = 2.0) -> dict:
    return meter(net, "hostB", "get", net["hostA"].address, port, 1, "--timeout", timeout)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_hang_resume_kill_and_restart_a_lab_process(
    net: Network, lab: Faults, tmp_path: Path
) -> None:
    port = net.free_port("hostA")
    web = http_server(net, "hostA", port, tmp_path)
    lab.track(web, ready=lambda: "seconds" in _get(net, port))
    web.start()
    try:
        wait_for(lambda: "seconds" in _get(net, port), timeout=20, what="web answers")
        with lab.hang("web") as hung:
            assert hung.method == "signal" and _state(web.pid) == "T"
            assert "timed out" in _get(net, port, timeout=1.0)["error"]  # accepted, no answer
        assert "seconds" in _get(net, port)  # resumed: answers again
        lab.kill("web")
        assert not web.is_running()
        assert "ConnectionRefused" in _get(net, port)["error"]
        first = web.pid
        lab.restart("web")  # waits for ready: the same port answers
        assert web.pid != first and "seconds" in _get(net, port)
    finally:
        web.stop(timeout=5)


def test_every_fault_is_undone_when_the_lab_exits_even_on_error(
    net: Network, tmp_path: Path
) -> None:
    port = net.free_port("hostA")
    web = http_server(net, "hostA", port, tmp_path).start()
    try:
        wait_for(lambda: "seconds" in _get(net, port), timeout=20, what="web answers")
        with pytest.raises(RuntimeError, match="scenario failed"), Faults(net, tmp_path) as lab:
            lab.track(web)
            lab.loss("hostA", 0.2)
            lab.partition("hostB", "hostC", oneway=True)
            lab.bandwidth("hostC", 10_000_000)
            relay = lab.latency("hostA", 0.05, port=port)
            lab.hang("web")
            held = leftovers(net)
            assert set(held) >= {"bridge", "hostC"}, held  # what the check below must see
            assert "numgen random" in held["bridge"] and " tbf " in held["hostC"]
            raise RuntimeError("scenario failed")
        assert leftovers(net) == {}
        assert lab.applied == [] and not relay.active
        assert _state(web.pid) != "T" and "seconds" in _get(net, port)
        if relay.method == "relay":
            assert all(p != int(relay.address.rsplit(":", 1)[1]) for _, p in net.listening("hostA"))
    finally:
        web.stop(timeout=5)


def test_faults_name_the_real_registry_and_its_host(
    network: Network, faults_reason: str | None, tmp_path: Path
) -> None:
    """The issue's own scenario words on the lab's real registry (HTTPS in ``reg``)."""
    if faults_reason:
        pytest.skip(f"lab faults unavailable: {faults_reason}")
    with https_registry(network, tmp_path) as (view, certs, registry):

        def healthy(host: str) -> bool:
            answer = network.probe(host, "get", f"{view.url}/health", "--ca", certs.ca,
                                   "--timeout", 1)  # fmt: skip
            return answer.get("status") == 200

        with Faults(network, tmp_path) as lab:
            lab.track(registry, ready=lambda: healthy("hostB"))
            with lab.partition("hostB", "reg"):
                assert not healthy("hostB") and healthy("hostC")
            assert healthy("hostB")
            with lab.hang("registry"):
                assert not healthy("hostC")
            assert healthy("hostC")
            port = int(view.url.rsplit(":", 1)[1])
            lab.kill("registry")
            assert not healthy("hostC")
            lab.restart("registry")  # the same command line: the same port, the same database
            assert (network["reg"].address, port) in network.listening("reg")
            assert healthy("hostB") and healthy("hostC")
        assert leftovers(network) == {}
