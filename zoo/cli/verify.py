"""``zoo verify ARTIFACT``: checksums, manifest and golden parity, with a verdict."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify", parents=[common], help="verify an exported artifact",
        description="Re-hash ARTIFACT against its manifest and SHA256SUMS, check the embedded "
        "manifest, then load it the way a device runtime would (a fresh Python process without "
        "zoo or torchvision), run the golden input and compare with the eager model's output "
        "recorded at export time. Exits 1 if any check fails.",
    )
    p.add_argument("artifact", type=Path, help="the .pt/.ptl/... file (or its .manifest.json)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from zoo.cli.output import print_json, stdout_console
    from zoo.export.verify import verify

    report = verify(args.artifact)
    if args.json:
        print_json(report.as_dict())
        return 0 if report.ok else 1
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", show_header=False)
    table.add_column("mark")
    table.add_column("check", style="bold")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        mark = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
        table.add_row(mark, check.name, escape(check.detail))
    console = stdout_console()
    console.print(table)
    verdict = "[bold green]VERIFIED[/]" if report.ok else "[bold red]NOT VERIFIED[/]"
    console.print(f"{verdict} {escape(str(report.artifact))}")
    if report.untrained:
        from zoo.manifest import UNTRAINED_WARNING

        console.print(f"[bold yellow]{UNTRAINED_WARNING}[/]")
    return 0 if report.ok else 1
