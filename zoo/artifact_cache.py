"""Compatibility home of the export cache; it lives in :mod:`zoo.export.cache` (split by job:
entries, records, install, housekeeping)."""

from zoo.export.cache import *  # noqa: F403
from zoo.export.cache import _human  # noqa: F401
from zoo.export.cache.base import _warn_stderr  # noqa: F401
from zoo.export.cache.entries import UNKNOWN_PROVENANCE  # noqa: F401
