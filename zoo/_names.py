"""Compatibility home of the name rules; they live in :mod:`zoo._core.names`."""

from zoo._core.names import *  # noqa: F403
from zoo._core.names import _UNPRINTABLE  # noqa: F401
