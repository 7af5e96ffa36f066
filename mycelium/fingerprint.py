"""A model's fingerprint: parameter names, shapes and dtypes, hashed (no torch, no numpy).

The registry, the ServerApp and the trainer all check model arrays against the same
:class:`ModelSpec`, so a model that does not fit a group is refused with the same message
everywhere. Arrays travel as an ordered list (see :mod:`mycelium.codec`), so a check is
positional; the names are there to say *which* parameter does not fit.

The fingerprint is ``sha256:`` + the hex sha256 of the canonical JSON of the spec
(``[[name, [dims...], dtype], ...]``, no spaces): equal specs give equal fingerprints on
every machine and Python version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PREFIX = "sha256:"
MAX_PARAMS = 10_000
MAX_NAME = 200


class FingerprintError(ValueError):
    """Arrays (or a spec) that do not fit a model's fingerprint."""


class ArrayLike(Protocol):
    """What a check needs of an array: numpy's ``shape`` and ``dtype``."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> Any: ...


@dataclass(frozen=True)
class ParamSpec:
    """One named array of a model."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.name} {self.dtype}{list(self.shape)}"


@dataclass(frozen=True)
class ModelSpec:
    """The ordered arrays of a model; ``fingerprint`` identifies it."""

    params: tuple[ParamSpec, ...]

    @property
    def fingerprint(self) -> str:
        return PREFIX + hashlib.sha256(self.canonical().encode()).hexdigest()

    @property
    def num_values(self) -> int:
        """Total number of scalars (parameters and buffers)."""
        total = 0
        for p in self.params:
            size = 1
            for dim in p.shape:
                size *= dim
            total += size
        return total

    def canonical(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def to_json(self) -> list[list[Any]]:
        """``[[name, [dims...], dtype], ...]`` (what the registry stores)."""
        return [[p.name, list(p.shape), p.dtype] for p in self.params]

    @classmethod
    def from_json(cls, value: Any) -> ModelSpec:
        """Inverse of :meth:`to_json`; FingerprintError with the reason if malformed."""
        if not isinstance(value, list) or not 0 < len(value) <= MAX_PARAMS:
            raise FingerprintError(
                f"a model spec is a list of 1..{MAX_PARAMS} [name, shape, dtype] entries"
            )
        return cls(tuple(_param_from_json(i, item) for i, item in enumerate(value)))

    def check(self, arrays: Sequence[ArrayLike]) -> None:
        """FingerprintError naming the first array that does not fit (count, shape, dtype)."""
        if len(arrays) != len(self.params):
            raise FingerprintError(
                f"model has {len(arrays)} arrays, the fingerprint {self.short()} expects "
                f"{len(self.params)} ({self.params[0].name} ... {self.params[-1].name})"
            )
        for index, (param, array) in enumerate(zip(self.params, arrays, strict=True)):
            shape, dtype = tuple(int(d) for d in array.shape), _dtype_name(array.dtype)
            if shape != param.shape or dtype != param.dtype:
                raise FingerprintError(
                    f"array {index} ({param.name}) is {dtype}{list(shape)}, "
                    f"the fingerprint {self.short()} expects {param.dtype}{list(param.shape)}"
                )

    def fits(self, arrays: Sequence[ArrayLike]) -> bool:
        try:
            self.check(arrays)
        except FingerprintError:
            return False
        return True

    def short(self) -> str:
        """The first 12 hex digits, for messages."""
        return self.fingerprint[len(PREFIX) : len(PREFIX) + 12]


def model_spec(names: Iterable[str], arrays: Iterable[ArrayLike]) -> ModelSpec:
    """The spec of ``arrays`` named ``names`` (e.g. a torch ``state_dict``'s keys)."""
    names, arrays = list(names), list(arrays)
    if len(names) != len(arrays):
        raise FingerprintError(f"{len(names)} names for {len(arrays)} arrays")
    return ModelSpec(
        tuple(
            ParamSpec(str(n), tuple(int(d) for d in a.shape), _dtype_name(a.dtype))
            for n, a in zip(names, arrays, strict=True)
        )
    )


def fingerprint(names: Iterable[str], arrays: Iterable[ArrayLike]) -> str:
    """``model_spec(names, arrays).fingerprint``."""
    return model_spec(names, arrays).fingerprint


def check_fingerprint(spec_json: Any, claimed: str) -> ModelSpec:
    """Parse a spec and verify that it hashes to ``claimed`` (e.g. at group creation)."""
    spec = ModelSpec.from_json(spec_json)
    if spec.fingerprint != claimed:
        raise FingerprintError(
            f"fingerprint {claimed!r} does not match its model spec ({spec.fingerprint})"
        )
    return spec


def _dtype_name(dtype: Any) -> str:
    """numpy's canonical name (``float32``), whatever spelling ``dtype`` has."""
    name = getattr(dtype, "name", None)
    return str(name if name is not None else dtype)


def _param_from_json(index: int, item: Any) -> ParamSpec:
    if not (isinstance(item, list | tuple) and len(item) == 3):
        raise FingerprintError(f"model spec entry {index} is not [name, shape, dtype]")
    name, shape, dtype = item
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise FingerprintError(f"model spec entry {index}: name must be 1..{MAX_NAME} characters")
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise FingerprintError(f"model spec entry {index} ({name}): shape must be a list of ints")
    if not isinstance(dtype, str) or not dtype.isidentifier():
        raise FingerprintError(f"model spec entry {index} ({name}): dtype must be a name")
    return ParamSpec(name, tuple(shape), dtype)
