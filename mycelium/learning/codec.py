"""Model weights to and from bytes (numpy only: the Flower ServerApp imports this without torch).

The format is ``np.savez`` with arrays named ``arr_0 .. arr_n`` in list order and
``allow_pickle=False`` on load, so a downloaded model cannot execute code.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np


def weights_to_bytes(arrays: list[np.ndarray]) -> bytes:
    """Serialise ``arrays`` (in order) to ``.npz`` bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, *[np.asarray(array) for array in arrays])
    return buffer.getvalue()


def bytes_to_weights(data: bytes) -> list[np.ndarray]:
    """Inverse of :func:`weights_to_bytes`; ValueError on anything that is not such a file."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = sorted(npz.files, key=_array_index)
            return [npz[name] for name in names]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"not a weights file: {exc}") from exc


def _array_index(name: str) -> int:
    prefix, _, number = name.partition("_")
    if prefix != "arr" or not number.isdigit():
        raise ValueError(f"unexpected array name {name!r}")
    return int(number)
