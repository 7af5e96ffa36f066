"""An uploaded model against its group's fingerprint, from the ``.npz`` headers alone.

The model format is :mod:`mycelium.learning.codec`'s: ``np.savez`` arrays named ``arr_0``,
``arr_1``, ... in order. Only each array's header is read (shape and dtype), never its data,
and nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np

from mycelium.fingerprint import FingerprintError, ModelSpec


class ModelMismatch(ValueError):
    """The upload is not an npz of arrays, or its arrays do not fit the group's model."""


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype


def check_upload(data: bytes, spec_json: str) -> None:
    """ModelMismatch with the reason when ``data`` does not fit ``spec_json``."""
    spec = ModelSpec.from_json(json.loads(spec_json))
    try:
        spec.check(npz_headers(data))
    except FingerprintError as exc:
        raise ModelMismatch(f"model does not fit the group's fingerprint: {exc}") from None


def npz_headers(data: bytes) -> list[_Header]:
    """Shape and dtype of each ``arr_N`` of an npz, in N order."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = sorted(archive.namelist(), key=_index)
            return [_read_header(archive, name) for name in names]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ModelMismatch(f"model is not an npz of arrays: {exc}") from None


def _read_header(archive: zipfile.ZipFile, name: str) -> _Header:
    with archive.open(name) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects")
    return _Header(tuple(shape), dtype)


def _index(name: str) -> int:
    stem = name.removesuffix(".npy")
    prefix, _, number = stem.partition("_")
    if prefix != "arr" or not number.isdigit():
        raise ValueError(f"unexpected array name {name!r}")
    return int(number)
