"""Node-config quoting, checked with Flower's own parser."""

from __future__ import annotations

import pytest
from flwr.common.config import parse_config_args

from mycelium.flower.protocol import format_config


@pytest.mark.parametrize(
    "config",
    [
        {"trainer-url": "http://127.0.0.1:8000", "registry-node-id": 7},
        {"name": "with spaces and = signs", "lr": 0.05, "flag": True, "off": False},
        {"quote": "it's", "backslash": "C:\\path\\x", "empty": ""},
        {"big": 2**63 + 5, "neg": -3, "tiny": 1e-9, "unicode": "héllo wörld"},
    ],
)
def test_node_config_round_trips_through_flowers_parser(config: dict) -> None:
    assert parse_config_args([format_config(config)]) == config


@pytest.mark.parametrize(
    "config",
    [
        {"both": 'it\'s "x"'},
        {"bad key": 1},
        {"nan": float("nan")},
        {"newline": "a\nb"},
        {"list": [1, 2]},
    ],
)
def test_node_config_refuses_what_cannot_round_trip(config: dict) -> None:
    with pytest.raises(ValueError):
        format_config(config)
