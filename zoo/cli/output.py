"""Shared CLI output helpers: rich consoles for humans, plain JSON for machines.

This is the printing edge: every line zoo writes for a human passes :func:`shown` (through
:func:`error_line`, or the consoles :func:`stdout_console` makes), so text that came from a
card, a store, a plugin or an exception can neither carry a credential (URL user info,
signed-URL parameters: :func:`zoo.weights.urls.redact_text`) nor steer the terminal (control
characters are shown escaped: :func:`zoo._core.names.printable`). JSON escapes control
characters itself and keeps data as it is.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich costs ~30 ms to import: only commands that draw with it pay
    from rich.console import Console


def shown(text: str) -> str:
    """``text`` as it may reach a terminal: secrets masked, control characters escaped."""
    from zoo._core.names import printable
    from zoo.weights.urls import redact_text

    return printable(redact_text(text))


def stdout_console() -> Console:
    """A console for results (tables, panels) on stdout; wide when piped so nothing is cut.
    Every string it renders (``print`` arguments, table cells) passes :func:`shown` first."""
    from rich.console import Console

    class _SafeConsole(Console):
        def render_str(self, text: str, **kwargs: Any) -> Any:
            return super().render_str(shown(text), **kwargs)

    return _SafeConsole(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def print_json(data: Any) -> None:
    """Machine output: indented, key order kept, newline-terminated."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def error_line(message: str) -> None:
    """One line on stderr, red on a terminal; never wrapped; control characters escaped and
    credentials masked (:func:`shown`)."""
    text = " ".join(shown(message).split())
    if sys.stderr.isatty():
        text = f"\x1b[31m{text}\x1b[0m"
    sys.stderr.write(text + "\n")


def human_count(n: int | None) -> str:
    """42004074 -> '42.0M'; 644 -> '644' (:func:`zoo._core.settings.format_count`)."""
    from zoo._core.settings import format_count

    return format_count(n)


def human_bytes(n: int | None) -> str:
    """168312177 -> '160.5 MiB' (zoo's one size printer: :func:`zoo._core.settings.format_size`)."""
    from zoo._core.settings import format_size

    return format_size(n)


def check_output_folder(folder: Path, option: str = "-o") -> None:
    """``-o DIR`` must be a folder, or a path that can become one, that this process may
    write into; otherwise a :class:`~zoo.UsageError` (exit 2), raised before any download,
    build or export rather than after the work."""
    from zoo.errors import UsageError

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: exists and is not a folder; name a folder")
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {folder}: {existing} is not a folder; name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):  # also False on a read-only mount
        raise UsageError(f"{option} {folder}: cannot write into {existing} (read-only or no "
                         "permission); name a folder you can write")
