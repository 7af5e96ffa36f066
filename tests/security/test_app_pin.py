"""App pinning: a member runs only the ClientApp it has installed.

The slow test is the issue's scenario on loopback: a group host whose run ships a tampered
ClientApp (one that writes a marker file) trains no pinned member; the same run does execute
on a SuperNode left in Flower's default subprocess isolation, which is the hole."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mycelium import node_keys
from mycelium.flower.protocol import SuperNodeConfig
from mycelium.procs import wait_for
from mycelium.security.admission import Admission, ControlApiAdmin, Member
from mycelium.security.app_pin import (
    PinError,
    PinnedExecutor,
    RefusedRun,
    app_fab_hash,
    load_client_app,
    next_poll_wait,
)
from tests.security.conftest import APP_DIR, Lab

# flwr's FAB builder uses a pathspec API that warns once per pattern and call.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec")


def tampered_app(dest: Path, marker: Path) -> Path:
    """A copy of our app whose ClientApp writes ``marker`` when it is imported."""
    app = dest / "flower_app"
    shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
    client = app / "mycelium_flower" / "client_app.py"
    payload = f"open({str(marker)!r}, 'a').write('tampered ClientApp ran\\n')\n"
    source = client.read_text()
    assert "app = ClientApp()" in source
    client.write_text(source.replace("app = ClientApp()", payload + "app = ClientApp()"))
    return app


def test_fab_hash_is_stable_and_follows_the_code(tmp_path: Path) -> None:
    ours = app_fab_hash(APP_DIR)
    assert len(ours) == 64 and app_fab_hash(APP_DIR) == ours
    copy = tmp_path / "flower_app"
    shutil.copytree(APP_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "mycelium_flower" / "__pycache__").mkdir(exist_ok=True)
    (copy / "mycelium_flower" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert app_fab_hash(copy) == ours  # what Flower leaves out of a FAB does not count
    assert app_fab_hash(tampered_app(tmp_path / "t", tmp_path / "m")) != ours


def test_load_client_app_and_its_errors(tmp_path: Path) -> None:
    from flwr.clientapp import ClientApp

    assert isinstance(load_client_app(APP_DIR), ClientApp)
    with pytest.raises(PinError, match="names no clientapp"):
        load_client_app(tmp_path)
    with pytest.raises(PinError, match="cannot build"):
        app_fab_hash(tmp_path)


@pytest.mark.slow
def test_a_tampered_clientapp_never_runs_on_a_pinned_member(lab: Lab, tmp_path: Path) -> None:
    from mycelium.flower.group_host import initial_model
    from mycelium.flower.trainer import LocalTrainer
    from mycelium.flower.trainer_http import TrainerServer
    from mycelium.learning.data import make_partition

    lab.start_superlink(auth=True)
    keys = [node_keys.generate(tmp_path / f"{n}.key") for n in ("pinned", "plain")]
    admin = ControlApiAdmin(lab.address, root_certificates=lab.certs.ca)
    Admission(admin, lambda: [Member(i, k.public_key) for i, k in enumerate(keys)]).sync()
    admin.close()
    data = make_partition(scenario="rotate", clusters=1, index=0, num_clients=2, seed=0)
    trainer = TrainerServer(LocalTrainer(data, seed=0))
    url = trainer.start()
    refusals: list[RefusedRun] = []
    node = lab.supernode("pinned", key=keys[0].private_key_path, isolation="process",
                         node_config=SuperNodeConfig(trainer_url=url))  # fmt: skip
    executor = PinnedExecutor(
        node.runtime_address,
        client_app=load_client_app(APP_DIR),
        expected_fab_hash=app_fab_hash(APP_DIR),
        on_refused=refusals.append,
    ).start()
    try:
        node.wait_connected()
        # No registry here: the ServerApp (shape-free) starts from the arrays given at start.
        start = tmp_path / "initial.npz"
        start.write_bytes(initial_model("digits", 0)[2])
        ours = lab.start_run(**{"num-rounds": 1, "initial-model": str(start)})
        wait_for(lambda: "round 1: 1/1 nodes" in lab.run_log(ours), timeout=180, interval=1,
                 what="one round of our own app")  # fmt: skip
        assert executor.served >= 1 and not refusals

        marker = tmp_path / "MARKER"
        bad_config = {"first-round-timeout": 30.0, "initial-model": str(start)}
        bad = lab.start_run(tampered_app(tmp_path, marker), **bad_config)
        wait_for(lambda: refusals, timeout=120, what="the pinned member refuses the run")
        assert refusals[0].run_id == bad and refusals[0].expected_hash == app_fab_hash(APP_DIR)
        wait_for(lambda: "replied with an error" in lab.run_log(bad), timeout=60, interval=1,
                 what="the ServerApp gets the error reply")  # fmt: skip
        assert not marker.exists()

        # Flower's default isolation installs and imports whatever FAB the run ships.
        lab.supernode("plain", key=keys[1].private_key_path).wait_connected()
        wait_for(marker.exists, timeout=120, what="the unpinned SuperNode runs the FAB")
    finally:
        executor.stop()
        trainer.stop()


def test_an_idle_executor_polls_less_and_less_and_fast_again_after_a_task() -> None:
    waits = [0.1]
    for _ in range(8):
        waits.append(next_poll_wait(waits[-1], False, 0.1, 1.0))
    assert waits[1] == pytest.approx(0.15)
    assert all(a < b for a, b in zip(waits[:5], waits[1:6], strict=True))
    assert waits[-1] == 1.0 and max(waits) == 1.0
    assert next_poll_wait(1.0, True, 0.1, 1.0) == 0.1
