"""``zoo verify ARTIFACT``: integrity, contract and golden parity, with a verdict."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoo.export.manifest import Manifest
    from zoo.export.verify import Provenance, RunLimits

EPILOG = """\
verdicts:
  VERIFIED              every check passed and the golden inputs ran in the format's runtime,
                        in a confined child (no writes outside its folder, no network, a
                        memory ceiling); "VERIFIED (unconfined: reason)" where this machine
                        could not confine it (docs/security.md says what that means)
  CHECKED, NOT RUN      integrity and structure passed, but this machine has no runtime for
                        the format (e.g. Core ML on Linux): the outputs were not checked
  NOT VERIFIED          a check failed (exit 1), or --require-run and nothing ran
warnings (after the verdict) say what a passing check cannot tell, e.g. a model whose output
is one class everywhere (random-init weights).

exit codes: 0 VERIFIED (or CHECKED, NOT RUN without --require-run), 1 otherwise, 2 bad usage.
See docs/manifest.md for exactly what each check covers.
"""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be within 0..86400 seconds")
    return value


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify", parents=[common], help="verify an exported artifact",
        description="Check ARTIFACT without running it (manifest, file names, sha256 against "
        "the manifest and SHA256SUMS, the embedded manifest, structure), then run its golden "
        "inputs (noise and a natural scene) in the format's own runtime, in an isolated "
        "process without zoo or torchvision, and compare with the outputs recorded at export "
        "time: finite values, the output contract, values within tolerance, argmax agreement "
        "(and SQNR for int8).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", type=Path,
                   help="the artifact (.pt, .ptl, .pte, .onnx, .mlpackage, ...) or its "
                   ".manifest.json")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--time-limit", type=_seconds, default=300.0, metavar="S",
                   help="seconds the runtime may take to load and run the golden inputs "
                   "(default 300)")
    p.add_argument("--require-run", action="store_true",
                   help="exit 1 unless the golden inputs actually ran (CHECKED, NOT RUN fails)")
    add_run_limits(p)
    from zoo.cli.store_options import add_store_options

    add_store_options(p, publish=False, sign=False, no_store=False, require=False)
    p.set_defaults(handler=cmd_verify)


def memory_size(text: str) -> int:
    """``--memory-limit SIZE``: bytes, at least 256 MiB (argparse type)."""
    from zoo._core.settings import parse_size

    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 256 << 20:
        raise argparse.ArgumentTypeError(f"{text!r}: the runtime needs at least 256MiB")
    return value


def add_run_limits(p: argparse.ArgumentParser) -> None:
    """``--memory-limit`` and ``--no-confine``: how the child that runs an artifact is
    bounded (zoo verify, zoo run --artifact)."""
    from zoo.export.sandbox import DEFAULT_MEMORY_LIMIT

    p.add_argument("--memory-limit", type=memory_size, default=DEFAULT_MEMORY_LIMIT, metavar="SIZE",
                   help="memory ceiling of the process that runs the artifact, e.g. 16GiB "
                   f"(default {DEFAULT_MEMORY_LIMIT >> 30}GiB)")
    p.add_argument("--no-confine", action="store_true",
                   help="run the artifact without confinement (benchmarks, debugging); the "
                   "verdict says so")


def provenance_from_args(args: argparse.Namespace) -> Provenance | None:
    """With trusted keys (--trusted-key or ZOO_TRUSTED_KEYS): a signature check that looks for
    a trusted record beside the artifact or in the team store."""
    from zoo.store.keys import load_trusted_keys, trusted_key_paths_from_env

    paths = list(getattr(args, "trusted_key", None) or []) or trusted_key_paths_from_env()
    if not paths:
        return None
    trusted = load_trusted_keys(paths)
    from zoo.cli.store_options import store_from_args

    config = store_from_args(args)

    def check(artifact: Path, sidecar: Path, manifest: Manifest) -> tuple[bool, str]:
        from zoo.store.errors import StoreError
        from zoo.store.provenance import check_provenance

        try:
            return check_provenance(artifact, sidecar, manifest.export.identity, trusted,
                                    config.open() if config is not None else None)
        except StoreError as exc:
            return False, str(exc)

    return check


def cmd_verify(args: argparse.Namespace) -> int:
    from zoo.export.verify import RunLimits

    return verify_and_report(
        args.artifact, as_json=args.json, time_limit=args.time_limit,
        require_run=args.require_run, provenance=provenance_from_args(args),
        limits=RunLimits(memory=args.memory_limit, confine=not args.no_confine))


def verify_and_report(artifact: Path, *, as_json: bool = False, time_limit: float = 300.0,
                      require_run: bool = False, provenance: Provenance | None = None,
                      limits: RunLimits | None = None) -> int:
    """Verify ``artifact`` and print the report (a table, or JSON); the exit code."""
    from zoo.cli.output import print_json, stdout_console
    from zoo.export.verify import verify

    report = verify(artifact, time_limit=time_limit, provenance=provenance, limits=limits)
    passed = report.verdict == "verified" or (report.verdict == "checked" and not require_run)
    if as_json:
        print_json(report.as_dict())
        return 0 if passed else 1
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", show_header=False)
    table.add_column("mark")
    table.add_column("check", style="bold")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        mark = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
        table.add_row(mark, escape(check.name), escape(check.detail))
    if report.verdict == "checked":
        table.add_row("[yellow]--[/]", "golden run", escape(f"not run: {report.not_run_reason}"))
    console = stdout_console()
    console.print(table)
    verdict = {"verified": "[bold green]VERIFIED[/]",
               "checked": "[bold yellow]CHECKED, NOT RUN[/]",
               "failed": "[bold red]NOT VERIFIED[/]"}[report.verdict]
    if report.verdict == "checked" and require_run:
        verdict = "[bold red]NOT VERIFIED[/] (--require-run: the golden inputs did not run: " \
            f"{escape(report.not_run_reason or 'no runtime')})"
    elif report.verdict == "verified" and report.unconfined:
        verdict += f" [yellow](unconfined: {escape(report.unconfined)})[/]"
    console.print(f"{verdict} {escape(str(report.artifact))}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if report.untrained:
        from zoo.export.manifest import UNTRAINED_WARNING

        console.print(f"[bold yellow]{UNTRAINED_WARNING}[/]")
    return 0 if passed else 1
