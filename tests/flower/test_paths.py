"""A GroupHost given relative paths works from another working directory (issue 8): its
paths are made absolute once, where it receives them, so ``flwr`` (run with cwd=work_dir)
and the SuperLink find their FLWR_HOME whatever the cwd is later. Slow: real Flower."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.flower.group_host import GroupHost
from tests.conftest import register_node, start_registry

pytestmark = pytest.mark.slow


def test_group_host_with_relative_work_dir_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    with start_registry(tmp_path) as (url, _):
        founder = register_node(url, name="founder")
        monkeypatch.chdir(first)
        host = GroupHost(
            url, name="rel", work_dir=Path("rel/group"), creator_token=founder.creds.token
        )
        monkeypatch.chdir(elsewhere)
        try:
            host.start()
            assert host.run_id is not None and host.is_healthy()
            assert host.work_dir == first / "rel" / "group"
            assert (host.work_dir / "superlink.flwr" / "config.toml").is_file()
            assert (host.work_dir / "superlink.log").is_file()
        finally:
            host.stop()
            founder.client.close()
    assert list(elsewhere.iterdir()) == [], "a child wrote relative to the later cwd"
