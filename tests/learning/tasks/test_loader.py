"""Finding tasks by reference, with one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mycelium.learning.tasks.loader import TaskLoadError, load_task

ROOT = Path(__file__).resolve().parents[3]


def test_builtin_names() -> None:
    assert load_task("digits").name == "digits"
    assert load_task(" mnist ").name == "mnist"
    assert load_task("mycelium.learning.tasks.mnist:TASK") is load_task("mnist")


def test_a_file_outside_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    task = load_task(f"{ROOT / 'examples' / 'my_task.py'}:TASK")
    assert task.name == "linear-digits"
    monkeypatch.chdir(ROOT)
    assert load_task("examples/my_task.py:TASK") is task  # relative to cwd, loaded once


def test_a_class_or_factory_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "user_tasks.py").write_text(
        "from mycelium.learning.tasks.digits import DigitsTask\n"
        "class Mine(DigitsTask):\n    name = 'mine'\n"
        "def make():\n    return Mine()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_task("user_tasks:Mine").name == "mine"
    assert load_task("user_tasks:make").name == "mine"
    sys.modules.pop("user_tasks", None)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("cifar", "expected a built-in name (digits, mnist), package.module:attr"),
        ("no_such_module_xyz:TASK", "cannot import 'no_such_module_xyz'"),
        (
            "mycelium.learning.tasks.mnist:NOPE",
            "mycelium.learning.tasks.mnist has no attribute 'NOPE'",
        ),
        ("mycelium.learning.tasks.mnist:MNIST", "is not a task: it lacks"),
        ("/no/such/file.py:TASK", "no file /no/such/file.py"),
    ],
)
def test_bad_references_say_why(reference: str, message: str) -> None:
    with pytest.raises(TaskLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_task(reference)


def test_a_module_that_raises_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(TaskLoadError, match="running .*broken.py failed: boom"):
        load_task(f"{broken}:TASK")
    bad_name = tmp_path / "bad_name.py"
    bad_name.write_text(
        "from mycelium.learning.tasks.digits import DigitsTask\n"
        "class T(DigitsTask):\n    name = ''\n"
    )
    with pytest.raises(TaskLoadError, match="name must be a string"):
        load_task(f"{bad_name}:T")
