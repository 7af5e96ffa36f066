"""What crosses a group's process boundaries: config quoting and every typed value's codec,
checked with Flower's own parser."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
from flwr.common.config import (
    flatten_dict,
    fuse_dicts,
    get_fused_config_from_dir,
    get_project_config,
    parse_config_args,
)

from mycelium.config import STRATEGIES
from mycelium.flower.protocol import (
    ColdData,
    ConfigError,
    FitMeta,
    FitReplyMeta,
    RunConfig,
    SuperNodeConfig,
    format_config,
)
from mycelium.learning.strategy import StrategyConfig, StrategyError


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


# -- every value that crosses a group's process boundaries: typed, one codec each -----------
# Each round trip is built from the type's fields: an instance with every field unlike its
# default goes through the encoder, Flower's own parser (and for the run config the merge
# with flower_app/pyproject.toml's defaults, as the SuperLink does) and the decoder. A field
# that is not carried comes back as its default and fails the test.
APP_DIR = Path(__file__).resolve().parents[2] / "flower_app"


def unlike_defaults(cls: type, **given: Any) -> Any:
    """An instance of dataclass ``cls`` whose fields (but ``given``) all differ from their
    defaults, chosen from each field's type."""
    hints = get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        default = None if f.default is dataclasses.MISSING else f.default
        values[f.name] = _unlike(hints[f.name], default)
    return cls(**values)


def _unlike(hint: Any, default: Any) -> Any:
    if get_origin(hint) in (Union, UnionType):  # X | None: a value of X
        hint = next(a for a in get_args(hint) if a is not type(None))
    kind = get_origin(hint) or hint
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return unlike_defaults(kind)
    if kind is str:
        return f"{default or ''}x y'z"  # a space and a quote: the quoting is exercised
    if kind is bool:
        return not default
    if kind is int:
        return (default or 0) + 7
    if kind is float:
        return (default or 0.0) + 0.375
    if kind is Mapping:
        value_type = get_args(hint)[1]
        return {"a-key": 0.375} if value_type is float else {"lr": 0.375, "local-epochs": 2}
    raise AssertionError(f"no value unlike the default for {hint}")


def strategies_setting_every_parameter() -> list[StrategyConfig]:
    """Each strategy but the default with every parameter it takes set (0.375: in range for
    all); together they set every parameter of StrategyConfig (checked)."""
    params = [f.name for f in dataclasses.fields(StrategyConfig) if f.name != "name"]
    chosen = []
    for name in STRATEGIES:
        if name == StrategyConfig().name:
            continue
        taken = {}
        for param in params:
            try:
                StrategyConfig(name, **{param: 0.375})
            except StrategyError:
                continue
            taken[param] = 0.375
        chosen.append(StrategyConfig(name, **taken))
    assert {p for s in chosen for p in s.params} == set(params), "a parameter no one takes"
    return chosen


def _differs_everywhere(value: Any) -> bool:
    default = type(value)()
    return all(
        getattr(value, f.name) != getattr(default, f.name) for f in dataclasses.fields(value)
    )


@pytest.mark.parametrize("strategy", strategies_setting_every_parameter(), ids=lambda s: s.name)
def test_the_run_config_round_trips_every_field(strategy: StrategyConfig) -> None:
    sent = unlike_defaults(RunConfig, strategy=strategy)
    assert _differs_everywhere(sent)
    parsed = parse_config_args([format_config(sent.to_run_config())])
    app_defaults = flatten_dict(get_project_config(APP_DIR)["tool"]["flwr"]["app"]["config"])
    fuse_dicts(app_defaults, parsed, check_keys=True)  # `flwr run`: no key the app lacks
    received = get_fused_config_from_dir(APP_DIR, parsed)  # what the ServerApp gets
    assert RunConfig.from_run_config(received) == sent


def test_the_flower_apps_run_config_defaults_are_runconfigs() -> None:
    """flower_app/pyproject.toml cannot import: its defaults must equal RunConfig's."""
    app_defaults = flatten_dict(get_project_config(APP_DIR)["tool"]["flwr"]["app"]["config"])
    ours = RunConfig().to_run_config()
    assert {k: (type(v), v) for k, v in app_defaults.items()} == {
        k: (type(v), v) for k, v in ours.items()
    }
    assert RunConfig.from_run_config(app_defaults) == RunConfig()


def test_the_node_config_round_trips_every_field() -> None:
    sent = unlike_defaults(SuperNodeConfig)
    assert _differs_everywhere(sent) and sent.cold is not None
    assert all(
        getattr(sent.cold, f.name) != f.default for f in dataclasses.fields(ColdData)
    )  # a required field has no default: any value differs
    parsed = parse_config_args([format_config(sent.to_node_config())])
    assert SuperNodeConfig.from_node_config(parsed) == sent
    warm = SuperNodeConfig(trainer_url="http://127.0.0.1:8123")
    assert SuperNodeConfig.from_node_config(warm.to_node_config()) == warm


def test_a_node_config_with_part_of_the_cold_data_is_refused() -> None:
    cold = unlike_defaults(SuperNodeConfig).to_node_config()
    del cold["seed"]
    with pytest.raises(ConfigError, match="seed"):
        SuperNodeConfig.from_node_config(cold)
    with pytest.raises(ConfigError, match="clusters"):
        SuperNodeConfig.from_node_config({"scenario": "rotate", "clusters": "3"})


def test_the_trainers_http_metadata_round_trips_every_field() -> None:
    meta = unlike_defaults(FitMeta)
    assert _differs_everywhere(meta)
    assert FitMeta.from_header(meta.to_header()) == meta
    reply = unlike_defaults(FitReplyMeta)
    assert _differs_everywhere(reply)
    # HTTP header names come back in any case.
    received = {name.upper(): value for name, value in reply.to_headers().items()}
    assert FitReplyMeta.from_headers(received) == reply


def test_a_bad_run_config_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="num-rounds"):
        RunConfig.from_run_config({"num-rounds": "many"})
    with pytest.raises(StrategyError, match="--server-lr applies to"):
        RunConfig.from_run_config({"strategy": "fedavg", "server-lr": 0.5})
