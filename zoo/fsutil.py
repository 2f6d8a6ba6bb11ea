"""Compatibility home of the file-system helpers; they live in :mod:`zoo._core.fs`."""

from zoo._core.fs import *  # noqa: F403
from zoo._core.fs import _warned  # noqa: F401
