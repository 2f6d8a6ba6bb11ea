"""One exception tree for everything zoo reports to a user.

The CLI turns a :class:`ZooError` into one red line and its ``exit_code``; any other
exception is a bug and gets a traceback hint (``--debug`` for the full traceback).
"""

from __future__ import annotations


class ZooError(Exception):
    """Root of every error zoo raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(ZooError):
    """The user asked for something that cannot work as asked (bad option, bad value)."""

    exit_code = 2


class UnknownModelError(UsageError):
    """A model name that no registry or plugin defines."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; see `zoo list`"
        super().__init__(f"unknown model {name!r}{hint}")


class CardError(UsageError):
    """A model card (or registry file) that fails validation or cannot be parsed."""


class PluginError(ZooError):
    """A plugin that failed to load, clashed with another, or built something invalid."""


class DownloadError(ZooError):
    """Weights could not be obtained (network, HTTP status, offline mode, refused URL)."""


class HashMismatchError(DownloadError):
    """Downloaded or cached bytes whose sha256 does not match what was expected."""


class ExportError(ZooError):
    """An artifact could not be produced or verified."""


# The public home of these classes is ``zoo.errors`` (tracebacks, pickles and docs say so).
for _cls in (ZooError, UsageError, UnknownModelError, CardError, PluginError, DownloadError,
             HashMismatchError, ExportError):
    _cls.__module__ = "zoo.errors"
