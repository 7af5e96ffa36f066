"""``node`` run by hand: an error retrying cannot fix is one line on stderr with exit code 1
(issue 8)."""

from __future__ import annotations

import os
import site
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


def _venv_seeing_our_packages(venv: Path) -> Path:
    """A new venv whose interpreter imports what ours imports (a .pth adds our site
    directories, .pth files and editable installs included) but whose bin/ has no Flower
    executables; its python. (``--system-site-packages`` would not do: from inside a venv it
    sees the base interpreter's packages, not the venv's.)"""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    ours = [d for d in (*site.getsitepackages(), site.getusersitepackages()) if Path(d).is_dir()]
    lines = [f"import site; site.addsitedir({d!r})" for d in ours]
    (Path(purelib) / "_ours.pth").write_text("\n".join(lines) + "\n")
    return python


def test_missing_flower_is_one_line_and_exit_1(tmp_path: Path) -> None:
    python = _venv_seeing_our_packages(tmp_path / "venv")
    probe = _run(str(python), ["-c", "import typer, flwr, mycelium"], tmp_path)
    assert probe.returncode == 0, probe.stderr  # the failure below is Flower's bin/, not imports
    url = f"http://127.0.0.1:{free_port()}"
    args = [str(ROOT / "mycelium_net.py"), "node", "--registry-url", url, "--work-dir", "w"]
    out = _run(str(python), args, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: flower-superlink not found"), lines
    assert "Traceback" not in out.stdout + out.stderr
