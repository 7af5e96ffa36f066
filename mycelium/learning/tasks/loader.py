"""Find a task by reference: a built-in name, ``package.module:attr`` or ``path/file.py:attr``.

``attr`` names a task object, or a class / zero-argument function that returns one. Every
failure is a :class:`TaskLoadError` (a ValueError) with a one-line reason, so the CLI can
print it and exit 1.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from mycelium.learning.tasks.base import Task

BUILTIN: dict[str, str] = {
    "digits": "mycelium.learning.tasks.digits:TASK",
    "mnist": "mycelium.learning.tasks.mnist:TASK",
}
REQUIRED = ("name", "hyper", "scenarios", "create_model", "load_data", "train", "evaluate")


class TaskLoadError(ValueError):
    """A task reference that does not lead to a usable task."""


def load_task(reference: str) -> Task:
    """The task ``reference`` names (see the module docstring)."""
    ref = reference.strip()
    target = BUILTIN.get(ref, ref)
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise TaskLoadError(
            f"task {reference!r}: expected a built-in name ({', '.join(BUILTIN)}), "
            "package.module:attr or path/to/file.py:attr"
        )
    module = _import(reference, module_part)
    if not hasattr(module, attr):
        raise TaskLoadError(f"task {reference!r}: {module_part} has no attribute {attr!r}")
    return _instantiate(reference, getattr(module, attr))


def _import(reference: str, module_part: str) -> ModuleType:
    if module_part.endswith(".py"):
        return _import_file(reference, Path(module_part).expanduser().resolve())
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        raise TaskLoadError(f"task {reference!r}: cannot import {exc.name!r}") from None
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything
        raise TaskLoadError(f"task {reference!r}: importing {module_part} failed: {exc}") from None


def _import_file(reference: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise TaskLoadError(f"task {reference!r}: no file {path}")
    name = f"mycelium_user_task_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskLoadError(f"task {reference!r}: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything
        del sys.modules[name]
        raise TaskLoadError(f"task {reference!r}: running {path} failed: {exc}") from None
    return module


def _instantiate(reference: str, obj: object) -> Task:
    if not _looks_like_task(obj) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - a user's factory may raise anything
            raise TaskLoadError(f"task {reference!r}: creating the task failed: {exc}") from None
    missing = [name for name in REQUIRED if not hasattr(obj, name)]
    if missing:
        raise TaskLoadError(f"task {reference!r} is not a task: it lacks {', '.join(missing)}")
    name = obj.name  # type: ignore[attr-defined]
    if not isinstance(name, str) or not name or len(name) > 64:
        raise TaskLoadError(f"task {reference!r}: name must be a string of 1..64 characters")
    return obj  # type: ignore[return-value]


def _looks_like_task(obj: object) -> bool:
    return not isinstance(obj, type) and all(hasattr(obj, n) for n in REQUIRED)
