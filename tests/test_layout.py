"""The package map of docs/architecture.md, enforced: what each subpackage may import,
no import of a top-level script from the package, and modules small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mycelium"
FACES = {"registry", "demo", "mycelium_node", "mycelium_net"}  # top-level scripts
HEAVY = {"torch", "flwr", "fastapi", "uvicorn", "starlette", "sklearn"}
OURS = {"client", "registry", "dashboard", "flower", "node", "learning", "demo", "cli", "launch"}
MAX_LINES = 450  # "no module over about 400 lines"


def ours(*names: str) -> set[str]:
    return {f"mycelium.{name}" for name in names}


# Subpackage (or module) -> what it must not import: third-party tops and our subpackages.
FORBIDDEN: dict[str, set[str]] = {
    "mycelium.config": HEAVY | {"httpx", "numpy"} | ours(*OURS),
    "mycelium.procs": HEAVY | {"httpx", "numpy"} | ours(*OURS),
    "mycelium.fingerprint": HEAVY | {"httpx", "numpy"} | ours(*OURS),
    "mycelium.learning": {"fastapi", "uvicorn", "httpx"} | ours(*OURS - {"learning"}),
    "mycelium.client": HEAVY | ours(*OURS - {"client"}),
    "mycelium.client_admission": HEAVY | {"mycelium"},
    "mycelium.registry": {"torch", "flwr", "sklearn"}
    | ours(*OURS - {"registry", "client", "dashboard"}),
    # The dashboard reads the registry only through injected readers and the store's records.
    "mycelium.dashboard": {"torch", "flwr", "sklearn"}
    | ours(*OURS - {"dashboard", "registry"})
    | ours("registry.app", "registry.routers", "registry.deps", "registry.server"),
    "mycelium.flower": {"fastapi", "uvicorn"} | ours("registry", "node", "demo", "cli"),
    "mycelium.node": {"fastapi", "uvicorn"} | ours("registry", "demo", "cli"),
    "mycelium.launch": HEAVY | ours(*OURS - {"launch"}),
    "mycelium.demo": HEAVY | ours("registry", "flower", "node", "learning", "cli"),
    # Across machines: the rule, certificates, TLS settings and trust import nothing of ours;
    # the namespace test bench (netns, lab, probe) may start registries and agents.
    "mycelium.net": HEAVY - {"uvicorn"}
    | ours("registry", "flower", "node", "learning", "demo", "cli"),
    **{
        f"mycelium.net.{core}": HEAVY | ours(*OURS) | {"mycelium.procs"}
        for core in ("addresses", "certs", "tls", "trust")
    },
}
# What the CLI may import at module level (everything else inside a command: --help is instant).
CLI_TOP_LEVEL = {
    "typer", "mycelium", "mycelium.config", "mycelium.demo.config",
    "mycelium.cli", "mycelium.cli._common", "mycelium.cli.bench", "mycelium.cli.demo",
    "mycelium.cli.group", "mycelium.cli.node", "mycelium.cli.registry", "mycelium.cli.certs",
}  # fmt: skip


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _hits(names: set[str], forbidden: set[str]) -> set[str]:
    return {n for n in names for f in forbidden if n == f or n.startswith(f + ".")}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=_module)
def test_imports_follow_the_package_map(path: Path) -> None:
    module, tree = _module(path), ast.parse(path.read_text())
    names = _imports(tree)
    assert not {n.split(".")[0] for n in names} & FACES, f"{module} imports a top-level script"
    for owner, forbidden in FORBIDDEN.items():
        if module == owner or module.startswith(owner + "."):
            assert not _hits(names, forbidden), f"{module} imports {_hits(names, forbidden)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=_module)
def test_cli_imports_heavy_modules_only_inside_commands(path: Path) -> None:
    statements = [s for s in ast.parse(path.read_text()).body if isinstance(s, ast.ImportFrom)]
    top = {s.module for s in statements if s.module} | {
        alias.name
        for s in ast.parse(path.read_text()).body
        if isinstance(s, ast.Import)
        for alias in s.names
    }
    stdlib = {"__future__", "pathlib", "typing", "logging"}
    assert top - CLI_TOP_LEVEL - stdlib == set(), f"{_module(path)} imports at module level"


SOURCES = [*MODULES, *ROOT.glob("*.py"), *(ROOT / "bench").glob("*.py"),
           *(ROOT / "flower_app").rglob("*.py")]  # fmt: skip


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_too_long_to_read(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES
