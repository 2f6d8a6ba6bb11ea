"""``zoo bench NAME``: size, latency against eager fp32 and fidelity of each format x precision
measured here; a table (or JSON) and the record ``DIR/NAME.bench.json``."""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.cli.output import error_line

if TYPE_CHECKING:
    from zoo.bench.record import BenchRecord, Row, Stats
    from zoo.store.config import StoreConfig

EPILOG = """\
Each row: the artifact is exported (or reused from the export cache / pulled from the team
store, as `zoo fetch` would), loaded through its format's runtime module, and timed as
interleaved pairs against the eager fp32 model (eager, artifact, eager, artifact, ...): the
ratio column is artifact/eager, the median (min-max) of the pairs. Fidelity is SQNR and
argmax agreement against eager fp32 on the natural-image golden scene. A row that cannot run
here says why (a missing extra and its pip line; Core ML off macOS: size only).
--publish sends the record to the team store as bench/NAME/<sha256>.json (signed with
--sign KEY); `zoo site --store URL` plots what the store holds.

examples:
  zoo bench lraspp_mobilenet_v3_large --size 520 --threads 2
  zoo bench lraspp_mobilenet_v3_large --formats onnx:fp32 onnx:int8 pte --runs 11
  zoo bench single_conv --weights ./w.pth --formats torchscript onnx --json -o bench/
  zoo bench lraspp_mobilenet_v3_large --store s3://team-zoo/prod --publish --sign team.key
"""


def _positive(limit: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= limit:
            raise argparse.ArgumentTypeError(f"{text!r} must be a whole number in 1..{limit}")
        return int(text)

    return parse


def _size(text: str) -> tuple[int, int]:
    """``520`` -> (520, 520); ``400x600`` -> (400, 600)."""
    from zoo.cli.export_opts import MAX_SIDE, parse_hw

    if not text.strip().isdigit():
        return parse_hw(text)
    try:
        return parse_hw(f"{text.strip()}x{text.strip()}")
    except argparse.ArgumentTypeError:  # name what was typed, not the square made of it
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give N (a square, 1..{MAX_SIDE}) or HEIGHTxWIDTH, "
            "e.g. 520 or 400x600") from None


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``zoo bench``."""
    from zoo.bench.record import MAX_RUNS, MAX_THREADS
    from zoo.cli.fetch import add_weights_options
    from zoo.cli.store_options import add_store_options

    p = sub.add_parser(
        "bench", parents=[common], help="measure size, latency and fidelity per format",
        description="Export a model to each format x precision (or reuse the cache/store), "
        "measure artifact size, latency against eager fp32 (interleaved pairs) and fidelity "
        "on the golden scene, print a table and write DIR/NAME.bench.json.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="model name (see `zoo list`)")
    p.add_argument("--formats", nargs="+", metavar="F[:P]",
                   help="formats to bench, e.g. onnx:int8 pte (a bare format: each of its "
                   "precisions; default: every format x precision)")
    p.add_argument("--size", type=_size, metavar="N|HxW",
                   help="input size, N for NxN (default: the card's input_size)")
    p.add_argument("--runs", type=_positive(MAX_RUNS), default=7, metavar="N",
                   help="interleaved pairs per row (default 7)")
    p.add_argument("--threads", type=_positive(MAX_THREADS), default=2, metavar="N",
                   help="threads for eager and every runtime (default 2)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR",
                   help="folder for the artifacts and NAME.bench.json (default: current "
                   "folder)")
    add_weights_options(p)
    add_store_options(p, publish_help="publish the bench record to the team store "
                      "(bench/NAME/<sha256>.json; the same record again is a no-op)")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the bench, write the record, show it; exit 1 when a row failed."""
    from zoo.bench.record import write_record
    from zoo.bench.runner import BenchOptions, parse_targets, run_bench, weights_label
    from zoo.cli.fetch import check_weights_arg, progress_mode, weights_from_args
    from zoo.cli.main import load_registry
    from zoo.cli.output import check_output_folder, print_json
    from zoo.cli.store_options import custody_from_args, store_from_args

    registry = load_registry(args)
    card = registry.get(args.name)
    check_weights_arg(args)
    targets = parse_targets(args.formats, card, registry)
    check_output_folder(args.output)
    size = args.size or tuple(card.preprocessing.input_size)
    store = store_from_args(args, signatures=True)  # --publish/--sign refused here (exit 2)
    # --sign signs the bench record, not the artifacts: they are served as for `zoo fetch`
    custody = custody_from_args(args, replace(store, publish_after=False) if store else None)
    weights = weights_from_args(args, card, store)
    mode = progress_mode(args)
    show = mode == "always" or (mode == "auto" and sys.stderr.isatty())

    def log(message: str) -> None:
        if show:
            error_line(f"zoo: {message}")

    with _progress(show, len(targets)) as progress:
        options = BenchOptions(size=size, runs=args.runs, threads=args.threads,
                               weights_label=weights_label(card, weights),
                               log=log, progress=progress)
        record = run_bench(card, weights, targets, options, args.output, registry=registry,
                           pull=store.pull_for_export if store is not None else None,
                           custody=custody)
    path = write_record(record, args.output)
    if store is not None and store.publish_after:
        _publish(store, record, path, args.quiet)
    if args.json:
        print_json(record)
    else:
        print_table(record)
    if not args.quiet:
        print(f"zoo: record {path}", file=sys.stderr)
    failed = [f"{r['format']}:{r['precision']}" for r in record["rows"]
              if r["status"] == "failed"]
    if failed:
        error_line(f"zoo: error: {len(failed)} row(s) failed: {', '.join(failed)} (their "
                   f"reasons are in the table and in {path})")
        return 1
    return 0


def _publish(store: StoreConfig, record: BenchRecord, path: Path, quiet: bool) -> None:
    """``--publish``: the record to the team store (a StoreError names the kept file)."""
    from zoo._core.redact import redact_url
    from zoo.store.bench_records import publish_bench
    from zoo.store.errors import StoreError

    try:
        result = publish_bench(store.open(), record, store.sign_key)
    except StoreError as exc:
        raise StoreError(f"{exc}; the bench record is kept in {path}: run `zoo bench` with "
                         "--publish again when the store answers") from None
    if not quiet:
        how = f"signed by {result.signer}" if result.signer else "unsigned"
        what = "already held" if result.already else "published"
        print(f"zoo: bench record {what} in {redact_url(result.store)} as {result.key} "
              f"({how})", file=sys.stderr)


class _RichProgress:
    """A rich progress bar on stderr: one step per row, the row and stage as its text."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), console=Console(stderr=True),
                            transient=True)
        self.task = self.bar.add_task("bench", total=total)

    def __enter__(self) -> _RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, done: int, total: int, label: str, stage: str) -> None:
        from rich.markup import escape

        self.bar.update(self.task, completed=done, description=escape(f"{label} {stage}"))


def _progress(show: bool, total: int) -> AbstractContextManager[Any]:
    return _RichProgress(total) if show else nullcontext(None)


def _ms(stats: Stats | None) -> str:
    return "-" if stats is None else f"{stats['median']:.1f}"


def _ratio(stats: Stats | None) -> str:
    if stats is None:
        return "-"
    return f"{stats['median']:.2f}x ({stats['min']:.2f}-{stats['max']:.2f})"


def _cells(row: Row) -> list[str]:
    from zoo.bench.record import SQNR_CAP_DB
    from zoo.cli.output import human_bytes

    sqnr = row["sqnr_db"]
    agree = row["argmax_agreement"]
    return [
        row["format"], row["precision"], row["status"],
        "-" if row["size_bytes"] is None else human_bytes(row["size_bytes"]),
        "-" if row["export_s"] is None else f"{row['export_s']:.1f}s",
        _ms(row["eager_ms"]), _ms(row["latency_ms"]), _ratio(row["ratio"]),
        "-" if sqnr is None else ("exact" if sqnr >= SQNR_CAP_DB else f"{sqnr:.1f}"),
        "-" if agree is None else f"{agree:.2%}",
        row["reason"] or "",
    ]


def print_table(record: BenchRecord) -> None:
    """The record as a table on stdout, with the machine and settings above it."""
    from rich.markup import escape
    from rich.table import Table

    from zoo.cli.output import stdout_console

    m, s = record["machine"], record["settings"]
    console = stdout_console()
    console.print(escape(
        f"{record['model']}: input 1x3x{s['size'][0]}x{s['size'][1]} (golden scene), "
        f"{s['threads']} threads, {s['runs']} interleaved pairs, {s['weights']} weights; "
        f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}"), highlight=False)
    table = Table(box=None, header_style="bold")
    for header in ("format", "prec", "status", "size", "export", "eager ms", "ms",
                   "ratio (min-max)", "SQNR dB", "argmax", "note"):
        table.add_column(header, justify="right" if header in (
            "size", "export", "eager ms", "ms", "SQNR dB", "argmax") else "left")
    for row in record["rows"]:
        table.add_row(*(escape(cell) for cell in _cells(row)))
    console.print(table)
    console.print("export: blank when the artifact came from the export cache or the team "
                  "store; ratio: artifact / eager latency", highlight=False)
