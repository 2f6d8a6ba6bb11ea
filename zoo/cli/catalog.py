"""Catalogue commands: ``zoo list``, ``zoo info``, ``zoo plugins``, ``zoo schema``.

None of these import torch: they read cards, which are plain data.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from zoo.cli.output import human_bytes, human_count, print_json, stdout_console
from zoo.registry import Registry
from zoo.schema import ModelCard


def output_contract(card: ModelCard) -> str:
    """'dict[out]' / 'dict[out,aux?]' / 'tensor', the way the list shows it."""
    out = card.output
    if out.kind == "tensor":
        return "tensor"
    keys = [out.key or "", *(f"{k}?" for k in out.optional_keys)]
    return f"dict[{','.join(keys)}]"


def default_weights_size(card: ModelCard) -> int | None:
    """Size in bytes of the card's default weights, if any."""
    source = card.weights_named(card.default_weights) if card.default_weights else None
    return source.size if source else None


def list_row(card: ModelCard) -> dict[str, Any]:
    """The data one row of ``zoo list`` shows (the JSON form too)."""
    return {
        "name": card.name,
        "family": card.family,
        "classes": card.num_classes,
        "output": output_contract(card),
        "params": card.num_params,
        "weights_size": default_weights_size(card),
        "plugin": card.plugin,
    }


def cmd_list(args: argparse.Namespace, registry: Registry) -> int:
    cards = registry.cards(args.pattern)
    if getattr(args, "format", None):
        from zoo.export.support import exports_to

        cards = [card for card in cards if exports_to(card, args.format)]
    rows = [list_row(card) for card in cards]
    if args.json:
        print_json(rows)
        return 0
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=None, box=None, header_style="bold")
    for col, justify in (
        ("name", "left"), ("family", "left"), ("classes", "right"), ("output", "left"),
        ("params", "right"), ("weights", "right"), ("plugin", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["name"], r["family"], str(r["classes"]), escape(r["output"]),
            human_count(r["params"]), human_bytes(r["weights_size"]), r["plugin"] or "-",
        )
    console = stdout_console()
    if rows:
        console.print(table)
    else:
        console.print(f"no models match {args.pattern!r}" if args.pattern else "no models")
    return 0


def cmd_info(args: argparse.Namespace, registry: Registry) -> int:
    card = registry.get(args.name)
    if args.json:
        print_json(card.model_dump(mode="json"))
        return 0
    from zoo.cli.info_view import render_card

    stdout_console().print(render_card(card, registry.source(card.name)))
    return 0


def cmd_plugins(args: argparse.Namespace, registry: Registry | None) -> int:
    from zoo.plugins import get_host

    host = registry.host if registry else get_host()
    cards = registry.cards() if registry else []
    rows = [
        {
            "name": p.name,
            "module": p.module,
            "dist": p.dist,
            "status": "ok" if p.ok else "failed",
            "models": [c.name for c in cards if c.plugin == p.name],
            "error": p.error,
        }
        for p in host.plugins.values()
    ]
    if args.json:
        print_json(rows)
        return 0
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("plugin", "distribution", "status", "models", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        status = "[green]ok[/]" if r["status"] == "ok" else "[red]failed[/]"
        detail = escape(r["error"] or r["module"])
        table.add_row(r["name"], r["dist"], status, ", ".join(r["models"]) or "-", detail)
    stdout_console().print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.which == "manifest":
        from zoo.manifest import Manifest

        schema = Manifest.model_json_schema()
    else:
        schema = ModelCard.model_json_schema()
    print(json.dumps(schema, indent=2))
    return 0
