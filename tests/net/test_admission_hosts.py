"""Issue 12 in the namespaces of issue 11: only admitted members train, only the host runs
its group, and no member runs code it did not install.

One lab for every check (a group founded by a0 in hostA, b0 in hostB joins it):

- both members run pinned (``--isolation process``) with their membership's key, and
  their Flower ids are the ones the host registered;
- a SuperNode in hostC with a key the registry never admitted is refused (it exits at
  activation and never sees a message);
- from hostC, the group's public address answers Control and Runtime paths with 404 and
  ``flwr run`` of another app fails, while the host's run keeps going;
- a hand-driven member in hostC is admitted (its receipt = its SuperNode's id) and cut off
  after it migrates away; another is cut off after its node is deleted;
- the host's own ``flwr run`` of a tampered app (its ClientApp writes a marker file) trains
  no member: no marker appears, both members leave the group and record why.

Every request is made from inside a namespace (``tests/net/member.py``, ``probe.py``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from mycelium import node_keys
from mycelium.flower.procs import flower_env, flower_executable
from mycelium.flower.protocol import format_config
from mycelium.lab.netns import Network
from mycelium.lab.stack import agent_in, https_registry
from mycelium.net.tls import flwr_connection_toml
from mycelium.node.actions import REFUSED_LOG
from mycelium.procs import ManagedProcess, cmdline, descendant_pids, wait_for
from tests.net.conftest import needs_nginx
from tests.net.hosts import supernode_argv
from tests.security.conftest import APP_DIR
from tests.security.test_app_pin import tampered_app

pytestmark = [
    pytest.mark.slow,
    needs_nginx,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec"),
]
logger = logging.getLogger(__name__)

MEMBER = Path(__file__).with_name("member.py")
NODE_ID = re.compile(r"SuperNode ID: (\d+)")


def hand(network: Network, host: str, *args: object) -> dict:
    """``member.py ARGS`` inside ``host``: its JSON answer."""
    proc = network.run(host, [sys.executable, MEMBER, *args], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def supernode_in(
    network: Network, host: str, work: Path, name: str, fleet: str, cert: Path, key: Path
) -> ManagedProcess:
    """A bare SuperNode in ``host`` with ``key`` (nothing serves its tasks)."""
    args = [
        flower_executable("flower-supernode"), "--superlink", fleet,
        "--root-certificates", cert, "--auth-supernode-private-key", key,
        "--port", network.free_port(host, "127.0.0.1"), "--max-wait-time", "20",
        "--isolation", "process",
    ]  # fmt: skip
    proc = ManagedProcess(
        name, network.command(host, args), log_path=work / f"{name}.log",
        env=flower_env(work / f"{name}.flwr"),
    )  # fmt: skip
    return proc.start()


def evil_launcher(
    network: Network, work: Path, host: ManagedProcess, home: Path, cert: Path
) -> ManagedProcess:
    """A second ServerApp launcher on the group's host, for a run the host submitted."""
    link = next(
        p for p in descendant_pids(host.pid or 0) if "flower-superlink" in (cmdline(p) or "")
    )
    address = re.search(r'address = "([^"]+)"', (home / "config.toml").read_text())
    assert address is not None
    args = [
        sys.executable, "-m", "mycelium.flower.serverapp_exec",
        "--runtime-api-address", address.group(1), "--root-certificates", cert,
        "--secret-file", home / "superexec.secret", "--parent-pid", link,
    ]  # fmt: skip
    proc = ManagedProcess(
        "evil-serverapp", network.command("hostA", args), log_path=work / "evil-serverapp.log",
        env=flower_env(home),
    )  # fmt: skip
    return proc.start()


def flwr_in(network: Network, host: str, home: Path, *args: object) -> tuple[int, str]:
    env = [f"{k}={v}" for k, v in flower_env(home).items() if k.startswith(("FLWR", "PYTHON"))]
    proc = network.run(host, ["env", *env, flower_executable("flwr"), *args], timeout=180)
    return proc.returncode, proc.stdout + proc.stderr


def connected_id(proc: ManagedProcess) -> int | str | None:
    if not proc.is_running():
        return "exited"
    match = NODE_ID.search(proc.read_log())
    return int(match.group(1)) if match else None


def cut_off_after(
    host: ManagedProcess, proc: ManagedProcess, flower_id: int, action: object
) -> float:
    """Seconds from ``action()`` until the group's host unregisters ``flower_id``; then the
    SuperNode must exit without a reply accepted. It exits at its next refused request,
    which for a message in flight is after ``--max-wait-time`` (nothing serves its tasks)."""
    started = time.monotonic()
    action()  # type: ignore[operator]
    line = f"(flower node {flower_id}) unregistered"
    wait_for(lambda: line in host.read_log(), timeout=30, what=f"{proc.name} unregistered")
    unregistered_s = time.monotonic() - started
    wait_for(lambda: not proc.is_running(), timeout=60, what=f"{proc.name} cut off")
    assert "Sent successfully" not in proc.read_log(), proc.read_log()[-1500:]
    return unregistered_s


def test_admission_exposure_and_pinning_across_hosts(network: Network, tmp_path: Path) -> None:
    with ExitStack() as stack:
        view, certs, _ = stack.enter_context(https_registry(network, tmp_path, group_ttl=60))
        url, ca = view.url, view.ca
        a0 = stack.enter_context(
            agent_in(network, "hostA", tmp_path, view, name="a0", cluster=0, index=0)
        )
        g = wait_for(lambda: view.group_of("a0"), timeout=180, interval=1, what="a0 founds")
        fleet = view.group(g).fleet_address
        cert = tmp_path / "group.pem"
        cert.write_text(view.group(g).certificate)
        wait_for(lambda: view.group(g).round, timeout=180, interval=1, what="first round")
        b0 = stack.enter_context(
            agent_in(network, "hostB", tmp_path, view, name="b0", cluster=0, index=1)
        )
        joined = wait_for(lambda: view.group_of("b0"), timeout=180, interval=1, what="b0 joins")
        assert joined == g, b0.read_log()[-3000:]
        wait_for(lambda: view.full_rounds(g, 2), timeout=240, interval=1, what="2-node round")

        # Both members: pinned, authenticated, with the Flower id their host registered.
        for agent in (a0, b0):
            argv = supernode_argv(agent)
            assert "--auth-supernode-private-key" in argv and "process" in argv, argv
        admitted = {m.name: m.flower_node_id for m in view.group(g).members}
        for name, agent in (("a0", a0), ("b0", b0)):
            match = re.search(r"admitted to group \d+ as Flower node (\d+) \(([\d.]+) s\)",
                              agent.read_log())  # fmt: skip
            assert match and int(match.group(1)) == admitted[name], agent.read_log()[-2000:]
            logger.warning("%s waited %s s for its admission receipt", name, match.group(2))

        # A stranger's SuperNode is refused at activation and never gets a message.
        stranger_key = node_keys.generate(tmp_path / "stranger.key").private_key_path
        stranger = supernode_in(network, "hostC", tmp_path, "stranger", fleet, cert, stranger_key)
        stack.callback(stranger.stop)
        wait_for(lambda: not stranger.is_running(), timeout=60, what="the stranger exits")
        log = stranger.read_log()
        assert stranger.returncode() != 0 and "Failed to activate SuperNode" in log, log[-1500:]
        assert "[RUN" not in log and "Received" not in log

        # Only the Fleet API is public: Control and Runtime paths are 404 from hostC ...
        for path in ("/v1/control/start-run", "/v1/control/list-runs", "/v1/runtime/get-nodes",
                     "/v1/fleet/../control/list-runs", "/health", "/docs"):  # fmt: skip
            answer = hand(network, "hostC", "post", f"https://{fleet}{path}", cert)
            assert answer == {"status": 404}, (path, answer)
        # ... `flwr run` of another app against the public address fails ...
        home = tmp_path / "hostC.flwr"
        home.mkdir()
        (home / "config.toml").write_text(flwr_connection_toml("x", fleet, cert))
        _, out = flwr_in(network, "hostC", home, "run", APP_DIR, "x", "--format", "json")
        answer = json.loads(out[out.index("{") :])  # `--format json` exits 0 either way
        assert answer["success"] is False and "404" in answer["error-message"], answer
        # ... and the host's run keeps going.
        last = view.group(g).round
        wait_for(lambda: view.group(g).round > last, timeout=180, interval=1,
                 what="the host's run goes on")  # fmt: skip

        # A hand-driven member: admitted, connected, cut off after it migrates away ...
        creds = [tmp_path / "hand1.json", tmp_path / "hand2.json"]
        keys = [node_keys.generate(tmp_path / f"hand{i}.key").private_key_path for i in (1, 2)]
        hand(network, "hostC", "join", url, ca, g, keys[0], creds[0])
        receipt = hand(network, "hostC", "receipt", url, ca, creds[0])
        sn1 = supernode_in(network, "hostC", tmp_path, "hand1", fleet, cert, keys[0])
        stack.callback(sn1.stop)
        got = wait_for(lambda: connected_id(sn1), timeout=60, what="hand1 connects")
        assert isinstance(got, int), sn1.read_log()[-1500:]
        assert got == receipt["flower_node_id"], sn1.read_log()[-1500:]
        other = hand(network, "hostC", "group", url, ca, creds[0],
                     f"{network['hostC'].address}:9")["group_id"]  # fmt: skip
        migrated_s = cut_off_after(
            a0, sn1, got, lambda: hand(network, "hostC", "migrate", url, ca, creds[0], other)
        )
        # ... and another after its node is deleted.
        hand(network, "hostC", "join", url, ca, g, keys[1], creds[1])
        second = hand(network, "hostC", "receipt", url, ca, creds[1])["flower_node_id"]
        sn2 = supernode_in(network, "hostC", tmp_path, "hand2", fleet, cert, keys[1])
        stack.callback(sn2.stop)
        wait_for(lambda: connected_id(sn2), timeout=60, what="hand2 connects")
        deleted_s = cut_off_after(
            a0, sn2, second, lambda: hand(network, "hostC", "delete", url, ca, creds[1])
        )
        logger.warning("unregistered %.1f s after migrating, %.1f s after deletion", migrated_s,
                       deleted_s)  # fmt: skip
        assert migrated_s < 15 and deleted_s < 15  # member.py's start + one 1 s sync, with room

        # The host runs a tampered app: no member runs it, both leave and say why.
        marker = tmp_path / "MARKER"
        bad = tampered_app(tmp_path / "tampered", marker)
        host_home = tmp_path / "a0" / "group" / "superlink.flwr"
        # It starts from the group's model in the registry (public) and targets its members.
        bad_config = {"registry-url": url, "registry-ca": str(ca), "group-id": g,
                      "first-round-timeout": 30.0}  # fmt: skip
        run_args = ("run", bad, "group", "--run-config", format_config(bad_config))
        _, out = flwr_in(network, "hostA", host_home, *run_args, "--format", "json")
        assert json.loads(out[out.index("{") :]).get("success") is True, out[-1500:]
        # Our host claims only its own run's ServerApp (serverapp_exec, docs/security.md): a
        # malicious host also starts a launcher of its own, with its SuperExec secret.
        stack.callback(evil_launcher(network, tmp_path, a0, host_home, cert).stop)
        for name in ("a0", "b0"):
            record = tmp_path / name / REFUSED_LOG
            wait_for(record.exists, timeout=180, interval=1, what=f"{name} refuses the run")
            assert json.loads(record.read_text().splitlines()[0])["group_id"] == g
        wait_for(lambda: view.group_of("b0") not in (g,), timeout=60, interval=1,
                 what="b0 left the group")  # fmt: skip
        assert "leaving group" in b0.read_log()
        assert not marker.exists(), marker.read_text()
