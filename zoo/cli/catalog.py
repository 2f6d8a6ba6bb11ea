"""Catalogue commands: ``zoo list``, ``zoo info``, ``zoo plugins``, ``zoo schema``.

None of these import torch: they read cards, which are plain data. ``zoo list`` reads only
the compiled summaries (no pydantic, no rich) and prints its table itself, so it stays fast
with thousands of cards. Card text reaches the terminal as text: never as rich markup, and
with control characters shown as escapes (:func:`zoo._core.names.printable`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from zoo._core.names import printable
from zoo.catalog.compiled import Summary, summarize
from zoo.cli.output import human_bytes, human_count, print_json

if TYPE_CHECKING:
    from rich.text import Text

    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard


def output_contract(card: ModelCard) -> str:
    """'dict[out]' / 'dict[out,aux?]' / 'tensor', the way the list shows it."""
    return summarize(card).output


def default_weights_size(card: ModelCard) -> int | None:
    """Size in bytes of the card's default weights, if any."""
    return summarize(card).weights_size


def summary_row(summary: Summary) -> dict[str, Any]:
    """The data one row of ``zoo list`` shows (the JSON form too)."""
    return {
        "name": summary.name,
        "family": summary.family,
        "classes": summary.classes,
        "output": summary.output,
        "params": summary.params,
        "weights_size": summary.weights_size,
        "plugin": summary.plugin,
    }


def list_row(card: ModelCard) -> dict[str, Any]:
    """``summary_row`` of a card object."""
    return summary_row(summarize(card))


def safe_text(value: object, style: str = "") -> Text:
    """Card data as a rich ``Text``: no markup interpreted, control characters escaped."""
    from rich.text import Text

    return Text(printable(str(value)), style=style)


def _cell_width(text: str) -> int:
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _padder(cells: Sequence[str], header: str, flush_right: bool) -> Callable[[str], str]:
    """A function padding one column's cells to its width (in terminal cells)."""
    if header.isascii() and "".join(cells).isascii():
        width = max([len(header), *map(len, cells)])
        return (lambda c: c.rjust(width)) if flush_right else (lambda c: c.ljust(width))
    width = max([_cell_width(header), *map(_cell_width, cells)])

    def pad(cell: str) -> str:
        space = " " * (width - _cell_width(cell))
        return space + cell if flush_right else cell + space

    return pad


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                right: Sequence[bool]) -> str:
    """A borderless table as plain text (what rich's ``box=None`` draws, at any size): cells
    escaped with :func:`printable`, columns two spaces apart, a bold header on a terminal."""
    columns = [[printable(c) for c in column] for column in zip(*rows, strict=True)] \
        if rows else [[] for _ in headers]
    pads = [_padder(col, h, r) for col, h, r in zip(columns, headers, right, strict=True)]
    head = "  ".join(pad(h) for pad, h in zip(pads, headers, strict=True)).rstrip()
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        head = f"\x1b[1m{head}\x1b[0m"
    padded = [list(map(pad, col)) for pad, col in zip(pads, columns, strict=True)]
    lines = ["  ".join(cells).rstrip() for cells in zip(*padded, strict=True)]
    return "\n".join([head, *lines]) + "\n"


def _warn(message: str) -> None:
    from zoo.catalog.plugins import warn

    warn(message)


def cmd_list(args: argparse.Namespace, registry: Registry) -> int:
    summaries = registry.summaries(args.pattern)
    for _, problem in registry.builder_problems(summaries):
        _warn(problem)  # listed, but `zoo fetch` cannot build them: say so now
    if getattr(args, "format", None):
        from zoo.errors import UsageError
        from zoo.export import available_formats
        from zoo.export.support import exports_to

        formats = available_formats(registry.host)
        if args.format not in formats:
            raise UsageError(f"unknown format {args.format!r}; choose from "
                             f"{', '.join(formats)}")
        summaries = [s for s in summaries if exports_to(registry.get(s.name), args.format)]
    if args.json:
        print_json([summary_row(s) for s in summaries])
        return 0
    if not summaries:
        message = f"no models match {args.pattern!r}" if args.pattern else "no models"
        sys.stdout.write(printable(message) + "\n")
        return 0
    headers = ("name", "family", "classes", "output", "params", "weights", "plugin")
    right = (False, False, True, False, True, True, False)
    rows = [
        (s.name, s.family, str(s.classes), s.output, human_count(s.params),
         human_bytes(s.weights_size), s.plugin or "-")
        for s in summaries
    ]
    sys.stdout.write(plain_table(headers, rows, right))
    return 0


def cmd_info(args: argparse.Namespace, registry: Registry) -> int:
    card = registry.get(args.name)
    problem = registry.missing_builder(card.name, card.architecture)
    if problem:
        _warn(problem)
    if args.json:
        print_json(card.model_dump(mode="json"))
        return 0
    from zoo.cli.info_view import render_card
    from zoo.cli.output import stdout_console

    stdout_console().print(render_card(card, registry.source(card.name), problem))
    return 0


_STATUS_STYLE = {"ok": "green", "partial": "yellow", "failed": "red"}


def cmd_plugins(args: argparse.Namespace, registry: Registry | None) -> int:
    """Every plugin, its models and its state: ``ok``; ``partial`` when some of its models
    are unavailable or cannot be built (``problems`` says which and why); ``failed``."""
    from zoo.catalog.plugins import get_host

    host = registry.host if registry else get_host()
    summaries = registry.summaries() if registry else []
    problems: dict[str | None, list[str]] = {}
    for plugin, problem in registry.problems(summaries) if registry else []:
        problems.setdefault(plugin, []).append(problem)
    for problem in problems.pop(None, []):  # the user's registry files: no plugin row
        _warn(problem)
    rows = [
        {
            "name": p.name,
            "module": p.module,
            "dist": p.dist,
            "status": "failed" if not p.ok else "partial" if problems.get(p.name) else "ok",
            "models": [s.name for s in summaries if s.plugin == p.name],
            "error": p.error,
            "problems": problems.get(p.name, []) if p.ok else [],
        }
        for p in host.plugins.values()
    ]
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    from zoo.cli.output import stdout_console

    table = Table(box=None, header_style="bold")
    for col in ("plugin", "distribution", "status", "models", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        detail = r["error"] or "\n".join(r["problems"]) or r["module"]
        table.add_row(safe_text(r["name"]), safe_text(r["dist"]),
                      safe_text(r["status"], _STATUS_STYLE[r["status"]]),
                      safe_text(", ".join(r["models"]) or "-"), safe_text(detail))
    stdout_console().print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.which == "manifest":
        from zoo.export.manifest import Manifest

        schema = Manifest.model_json_schema()
    elif args.which == "plan":
        from zoo.sets.plan import plan_schema

        schema = plan_schema()
    else:
        from zoo.catalog.schema import ModelCard

        schema = ModelCard.model_json_schema()
    print(json.dumps(schema, indent=2))
    return 0
