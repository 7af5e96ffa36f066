"""The docs' tables of defaults say what the code has: the run config (docs/flower.md), the
policy's parameters (docs/learning.md, and the node's in docs/architecture.md). Each table
is read from its document and compared with the Python values, the one home of each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mycelium import config
from mycelium.flower.protocol import RunConfig
from mycelium.learning.policy import PolicyConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def table(doc: str, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the table in ``doc`` whose header line is ``header``."""
    lines = (DOCS / doc).read_text().splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_the_run_config_table_is_runconfigs_defaults() -> None:
    rows = table("flower.md", "| key | default | meaning |")
    documented = {key.strip("`"): default.strip("`") for key, default, _ in rows}
    expected = {
        key: f'"{value}"' if isinstance(value, str) else repr(value)
        for key, value in RunConfig().to_run_config().items()
    }
    assert documented == expected


def test_the_policy_table_is_policyconfigs_defaults() -> None:
    rows = table("learning.md", "| rule | field (default) |")
    documented = {
        name: float(value)
        for _, cell in rows
        for name, value in re.findall(r"`(\w+)` \(([-\d.]+)", cell)
    }
    defaults = PolicyConfig()
    assert documented == {name: getattr(defaults, name) for name in documented}
    fields = set(PolicyConfig.__dataclass_fields__)
    assert fields <= set(documented), f"undocumented: {fields - set(documented)}"


# docs/architecture.md's table of the node's policy parameters: each row's default cell
# holds these values, in this order (the node's defaults, from mycelium.config; the rest
# from PolicyConfig).
ARCHITECTURE_DEFAULTS: dict[str, list[float]] = {
    "`performance_threshold`": [config.PERFORMANCE_THRESHOLD],
    "`cooldown_s`": [config.COOLDOWN_S],
    "flap damping": [
        PolicyConfig().flap_penalty,
        PolicyConfig().flap_half_life_s,
        PolicyConfig().flap_suppress,
    ],
    "`consolidation_epsilon`": [PolicyConfig().consolidation_epsilon],
    "`found_margin`": [],
    "`search_s`, `search_margin`": [config.SEARCH_EVALUATIONS, PolicyConfig().search_margin],
    "warm-up": [config.WARMUP_EPOCHS],
    "capacity, invite-only": [config.MAX_CAPACITY],
}


@pytest.mark.parametrize(
    "row",
    table("architecture.md", "| parameter | CLI option | default | effect |"),
    ids=lambda r: r[0],
)
def test_the_nodes_policy_table_is_the_nodes_defaults(row: list[str]) -> None:
    parameter, _, default, _ = row
    numbers = [float(n) for n in NUMBER.findall(default)]
    assert numbers == [float(v) for v in ARCHITECTURE_DEFAULTS[parameter]], default
    if parameter == "capacity, invite-only":
        assert default.endswith(config.JOIN_POLICY)
