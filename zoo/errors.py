"""Compatibility home of zoo's exception tree; it lives in :mod:`zoo._core.errors`."""

from zoo._core.errors import (
    CardError,
    DownloadError,
    ExportError,
    HashMismatchError,
    PluginError,
    UnknownModelError,
    UsageError,
    ZooError,
)

__all__ = ["CardError", "DownloadError", "ExportError", "HashMismatchError", "PluginError",
           "UnknownModelError", "UsageError", "ZooError"]
