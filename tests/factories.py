"""Kept importable while tests switch to ``tests.conftest`` (issue 10): the same names."""

from tests.conftest import *  # noqa: F403
from tests.conftest import __all__  # noqa: F401
