"""Shared CLI output helpers: rich consoles for humans, plain JSON for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


def stdout_console() -> Console:
    """A console for results (tables, panels) on stdout; wide when piped so nothing is cut."""
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def print_json(data: Any) -> None:
    """Machine output: indented, key order kept, newline-terminated."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def error_line(message: str) -> None:
    """One line on stderr, red on a terminal; never wrapped."""
    text = " ".join(message.split())
    if sys.stderr.isatty():
        text = f"\x1b[31m{text}\x1b[0m"
    sys.stderr.write(text + "\n")


def human_count(n: int | None) -> str:
    """42004074 -> '42.0M'; 644 -> '644'."""
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int | None) -> str:
    """168312177 -> '160.5 MiB'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
