"""Benchmarks that print figures (run through `python mycelium_net.py bench ...`).

Every benchmark raises :class:`BenchError` for what stops it from measuring."""

from __future__ import annotations

from collections.abc import Sequence


class BenchError(Exception):
    """The benchmark could not run or measure (a one-line message)."""


def check_rounds_and_modes(rounds: int, modes: Sequence[str], known: Sequence[str]) -> None:
    """:class:`BenchError` unless ``rounds >= 1`` and every mode is one of ``known``."""
    if rounds < 1:
        raise BenchError("rounds must be >= 1")
    bad = [m for m in modes if m not in known]
    if bad:
        raise BenchError(f"unknown mode(s) {bad}; use {', '.join(known)}")
