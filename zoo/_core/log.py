"""The one warning channel: ``logging.getLogger("zoo")``.

Code calls :func:`warn`; nothing else in zoo prints a warning. By default the logger has one
handler that prints each warning as one ``zoo: warning: ...`` line on stderr, control
characters escaped (what the CLI shows, and what a script that imports zoo sees). A program
with its own logging calls :func:`use_logging` and receives zoo's warnings as ordinary
records of the ``zoo`` logger.
"""

from __future__ import annotations

import logging
import sys

from zoo._core.names import printable
from zoo._core.redact import redact_text

LOGGER = logging.getLogger("zoo")
_said: set[str] = set()


def warn(message: str, *, once: bool = True) -> None:
    """Emit a warning (by default once per process for the same text)."""
    if once:
        if message in _said:
            return
        _said.add(message)
    LOGGER.warning(message)


def one_line(message: str) -> str:
    """``message`` squeezed onto one line, secrets masked, control characters escaped."""
    return printable(" ".join(redact_text(message).split()))


class _CliHandler(logging.Handler):
    """Prints ``zoo: warning: MESSAGE`` on stderr (red on a terminal)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "warning" if record.levelno < logging.ERROR else "error"
            text = one_line(f"zoo: {level}: {record.getMessage()}")
            if sys.stderr.isatty():
                text = f"\x1b[33m{text}\x1b[0m"
            sys.stderr.write(text + "\n")
        except Exception:  # a closed stderr: nothing to tell
            self.handleError(record)


def cli_handler() -> None:
    """Route zoo's warnings to stderr as ``zoo: warning:`` lines (the default)."""
    if not any(isinstance(h, _CliHandler) for h in LOGGER.handlers):
        LOGGER.addHandler(_CliHandler())
    LOGGER.propagate = False


def use_logging() -> None:
    """Send zoo's warnings to the application's logging configuration instead of stderr."""
    for handler in [h for h in LOGGER.handlers if isinstance(h, _CliHandler)]:
        LOGGER.removeHandler(handler)
    LOGGER.propagate = True


cli_handler()
