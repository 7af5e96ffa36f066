"""The model fingerprint: stable hash, clear refusals, torch-free."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mycelium.fingerprint import (
    FingerprintError,
    ModelSpec,
    check_fingerprint,
    fingerprint,
    model_spec,
)

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["fc.weight", "fc.bias"]
ARRAYS = [np.zeros((10, 64), np.float32), np.zeros(10, np.float32)]


def test_same_names_shapes_dtypes_give_the_same_fingerprint() -> None:
    spec = model_spec(NAMES, ARRAYS)
    assert spec.fingerprint == fingerprint(NAMES, [np.ones((10, 64), "f4"), np.ones(10, "f4")])
    assert spec.fingerprint.startswith("sha256:") and len(spec.fingerprint) == 7 + 64
    assert spec.num_values == 650
    changed = [
        model_spec(["fc.w", "fc.bias"], ARRAYS),
        model_spec(NAMES, [np.zeros((10, 65), np.float32), ARRAYS[1]]),
        model_spec(NAMES, [ARRAYS[0], np.zeros(10, np.float64)]),
        model_spec(NAMES[::-1], ARRAYS[::-1]),
    ]
    assert len({spec.fingerprint, *(c.fingerprint for c in changed)}) == 5


def test_the_hash_is_pinned() -> None:
    """Another machine or Python must compute the same value: the canonical JSON is fixed."""
    spec = model_spec(NAMES, ARRAYS)
    assert spec.canonical() == '[["fc.weight",[10,64],"float32"],["fc.bias",[10],"float32"]]'
    assert spec.fingerprint == (
        "sha256:" + __import__("hashlib").sha256(spec.canonical().encode()).hexdigest()
    )


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ([ARRAYS[0]], "model has 1 arrays, the fingerprint"),
        ([np.zeros((64, 10), np.float32), ARRAYS[1]], "array 0 (fc.weight) is float32[64, 10]"),
        ([ARRAYS[0], np.zeros(10, np.float64)], "array 1 (fc.bias) is float64[10]"),
    ],
)
def test_arrays_that_do_not_fit_are_refused_by_name(arrays: list, message: str) -> None:
    spec = model_spec(NAMES, ARRAYS)
    with pytest.raises(FingerprintError, match=re.escape(message)):
        spec.check(arrays)
    assert not spec.fits(arrays) and spec.fits(ARRAYS)


def test_spec_json_round_trip_and_claimed_fingerprint() -> None:
    spec = model_spec(NAMES, ARRAYS)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert check_fingerprint(spec.to_json(), spec.fingerprint) == spec
    with pytest.raises(FingerprintError, match="does not match its model spec"):
        check_fingerprint(spec.to_json(), "sha256:" + "0" * 64)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "x",
        [["a", [1]]],
        [["", [1], "float32"]],
        [["a", [-1], "float32"]],
        [["a", [1.5], "float32"]],
        [["a", [1], "float 32"]],
        [["a", [True], "float32"]],
    ],
)
def test_malformed_specs_are_refused(bad: object) -> None:
    with pytest.raises(FingerprintError):
        ModelSpec.from_json(bad)


def test_fingerprint_and_strategy_modules_import_without_torch_or_flwr() -> None:
    code = (
        "import sys, mycelium.learning.tasks, mycelium.fingerprint, mycelium.learning.strategy;"
        "bad=[m for m in ('torch','flwr') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
