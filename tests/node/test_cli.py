"""``node`` run by hand: an error retrying cannot fix is one line on stderr with exit code 1
(issue 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mycelium.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
BARE_PATH = os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir())


def _run(python: str, code_or_args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": BARE_PATH}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [python, *code_or_args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_missing_flower_is_one_line_and_exit_1(tmp_path: Path) -> None:
    venv = tmp_path / "venv"  # sees our packages, but its bin/ has no Flower executables
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    url = f"http://127.0.0.1:{free_port()}"
    args = [str(ROOT / "mycelium_net.py"), "node", "--registry-url", url, "--work-dir", "w"]
    out = _run(str(venv / "bin" / "python"), args, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: flower-superlink not found"), lines
    assert "Traceback" not in out.stdout + out.stderr
