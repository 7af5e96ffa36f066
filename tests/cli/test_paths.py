"""Every path a user gives the CLI (or a default makes) is absolute where it enters."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer

from mycelium.cli import app


def _commands(command: click.Command, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{prefix} {name}".strip())
    else:
        yield prefix, command


ROOT_COMMAND = typer.main.get_command(app)
PATH_OPTIONS = [
    (name, param)
    for name, command in _commands(ROOT_COMMAND)
    for param in command.params
    if isinstance(param.type, click.Path)
]


def test_the_cli_has_path_options() -> None:
    names = {f"{cmd} --{p.name}" for cmd, p in PATH_OPTIONS}
    for expected in ("demo --run_dir", "demo --report", "demo --plot"):
        assert expected in names, names
    assert "node --work_dir" in names and "node --data" in names


@pytest.mark.parametrize(("command", "param"), PATH_OPTIONS, ids=lambda v: getattr(v, "name", v))
def test_every_path_option_is_made_absolute(
    command: str, param: click.Parameter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ctx = click.Context(ROOT_COMMAND)
    value = param.type_cast_value(ctx, "some/relative.file")
    assert Path(value).is_absolute(), (command, param.name, value)
    assert Path(value) == tmp_path / "some" / "relative.file"
    default = param.get_default(ctx)
    if default is not None:
        assert Path(param.type_cast_value(ctx, default)).is_absolute()


def test_relative_defaults_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``registry --db`` is a path or an ``sqlite:///`` URL (so not a click.Path): the
    command turns it into an absolute path with ``database_path`` as it enters."""
    from mycelium.registry.store import database_path

    monkeypatch.chdir(tmp_path)
    registry = dict(_commands(ROOT_COMMAND))["registry"]
    (db,) = [p for p in registry.params if p.name == "db"]
    ctx = click.Context(ROOT_COMMAND)
    assert database_path(db.get_default(ctx)) == Path(os.getcwd()) / "mycelium.db"
    assert database_path("some/relative.file") == tmp_path / "some" / "relative.file"
