"""``bench scale``'s pieces that need no network: kinds of process, the tree sampler on
real processes, route rates between two scrapes, the --nodes list."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import BenchError
from bench.scale_bench import Scrape, TreeSampler, kind_of, parse_nodes, route_rates


def test_kinds_of_process_by_command_line() -> None:
    py = " /venv/bin/python "
    assert kind_of(py + "/venv/bin/flower-superlink --fleet-api-address x ") == "superlink"
    assert kind_of(py + "/venv/bin/flower-superexec --plugin-type serverapp ") == "superexec"
    assert kind_of(py + "/venv/bin/flwr-serverapp --serverappio-api-address x ") == "serverapp"
    launcher = py + "-m mycelium.flower.serverapp_exec --runtime-api-address x "
    assert kind_of(launcher) == "serverapp"
    assert kind_of(py + "/venv/bin/flower-supernode --superlink x ") == "supernode"
    assert kind_of(py + "/w/mycelium_net.py node --name n3 --work-dir /r/n3 ") == "agent"
    assert kind_of(py + "/w/mycelium_net.py registry --port 8000 ") == "registry"
    assert kind_of(py + "/venv/bin/flwr run /app local --stream ") == "flwr-run"
    assert kind_of(" sleep 5 ") == "other"


def test_the_sampler_sums_pss_and_cpu_of_a_real_process_tree() -> None:
    script = "b = bytearray(32 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    script += "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush()\nimport time\n"
    script += "time.sleep(60)\n"
    # `node` in the command line makes it an agent, as a node agent's would.
    cmd = [sys.executable, "-c", script, "node"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            sampler = TreeSampler(child.pid)  # the child's tree: nothing below it
            sampler.sample()
            assert sampler.peak_by_kind_mb == {} and sampler.peak_total_mb == 0.0
            sampler = TreeSampler(os.getpid())
            sampler.sample()
            assert sampler.peak_by_kind_mb["agent"] >= 32
            assert 32 <= sampler.anon_at_peak_mb["agent"] < sampler.peak_by_kind_mb["agent"]
            assert sampler.count_at_peak["agent"] >= 1
            assert sampler.cpu_by_kind()["agent"] > 0
        finally:
            child.kill()


def test_route_rates_between_two_scrapes() -> None:
    route = ("GET", "/groups/{group_id}/model")
    first = Scrape(0.0, {(*route, "200"): 10.0}, {route: 1000.0})
    last = Scrape(10.0, {(*route, "200"): 30.0, (*route, "304"): 10.0}, {route: 6000.0})
    rates = route_rates(first, last)
    assert rates == {"GET /groups/{group_id}/model": {"requests_per_s": 3.0, "bytes_per_s": 500}}


def test_parse_nodes() -> None:
    assert parse_nodes("6, 12,24") == [6, 12, 24]
    for bad in ("", "6,x", "1"):
        with pytest.raises(BenchError):
            parse_nodes(bad)


def test_bad_node_counts_are_one_line_and_exit_1() -> None:
    from typer.testing import CliRunner

    from mycelium_net import app

    result = CliRunner().invoke(app, ["bench", "scale", "--nodes", "6,x"])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "error: --nodes wants numbers separated by commas, got '6,x'"
    ]
