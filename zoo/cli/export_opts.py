"""The export half of ``zoo fetch``: ``--format`` and the options that shape an artifact."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cli.output import human_bytes
from zoo.errors import UsageError

if TYPE_CHECKING:
    from zoo.export.pipeline import ExportOutcome
    from zoo.registry import Registry
    from zoo.schema import ModelCard
    from zoo.weights import ResolvedWeights

_HW = re.compile(r"^(\d+)[xX](\d+)$")


def parse_hw(text: str) -> tuple[int, int]:
    """'400x600' -> (400, 600): height then width."""
    match = _HW.match(text.strip())
    if not match or 0 in (h := int(match.group(1)), w := int(match.group(2))):
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 520x520")
    return h, w


def parse_range(text: str) -> tuple[int, int]:
    """'64:1024' -> (64, 1024)."""
    low, sep, high = text.partition(":")
    if not (sep and low.isdigit() and high.isdigit() and 0 < int(low) <= int(high)):
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX, e.g. 128:1024")
    return int(low), int(high)


def add_export_options(p: argparse.ArgumentParser) -> None:
    """Add ``--format`` and friends to a parser."""
    g = p.add_argument_group("export (with --format)")
    g.add_argument("--format", "-f", metavar="F",
                   help="export to format F (torchscript, lite, pte, onnx, or a plugin's); without "
                   "it only the weights are fetched")
    g.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR",
                   help="folder for the artifact, manifest, operator list and SHA256SUMS "
                   "(default: current folder)")
    g.add_argument("--input-size", type=parse_hw, metavar="HxW",
                   help="example input height x width (default: the card's input_size)")
    g.add_argument("--bytecode-version", type=int, metavar="N",
                   help="lite only: backport to bytecode version N for older runtimes "
                   "(PyTorch Mobile 1.10 demo apps read <= 7)")
    g.add_argument("--keep-aux", action="store_true",
                   help="keep the auxiliary head (output dict gets 'aux'); dropped by default")
    g.add_argument("--quantize", choices=("int8",), metavar="int8",
                   help="post-training int8: FX graph mode for torchscript/lite, PT2E with the "
                   "XNNPACK quantizer for pte; the manifest records SQNR and argmax agreement")
    g.add_argument("--engine", choices=("qnnpack", "x86"), default=None,
                   help="torchscript/lite int8 engine: qnnpack (ARM phones, default) or x86")
    g.add_argument("--calibrate", type=Path, metavar="DIR",
                   help="folder of images to calibrate int8 with (default: a synthetic set, "
                   "flagged in the manifest)")
    g.add_argument("--dynamic-size", type=parse_range, metavar="MIN:MAX",
                   help="pte only: accept any height and width in MIN..MAX")
    g.add_argument("--verify", action="store_true",
                   help="run `zoo verify` on the artifact after exporting")


def check_export_args(args: argparse.Namespace, card: ModelCard) -> None:
    """Usage errors that need no work: catch them before any download or build."""
    from zoo.export import available_formats, get_exporter

    formats = available_formats()
    if args.format not in formats:
        raise UsageError(f"unknown format {args.format!r}; choose from {', '.join(formats)}")
    exporter = get_exporter(args.format)
    exporter.check_available()
    if args.quantize and args.quantize not in exporter.quantize_schemes:
        raise UsageError(f"--quantize {args.quantize} is not available for --format {args.format}")
    if (args.engine or args.calibrate) and not args.quantize:
        raise UsageError("--engine and --calibrate go with --quantize int8")
    if args.engine and args.format not in ("torchscript", "lite"):
        raise UsageError("--engine applies to torchscript/lite int8 (pte uses XNNPACK)")
    if args.calibrate is not None and not args.calibrate.is_dir():
        raise UsageError(f"--calibrate {args.calibrate}: not a folder of images")
    if args.dynamic_size and args.format != "pte":
        raise UsageError("--dynamic-size applies to --format pte only")
    if args.dynamic_size and args.input_size:
        low, high = args.dynamic_size
        if not all(low <= side <= high for side in args.input_size):
            raise UsageError("--input-size must lie inside --dynamic-size")
    if args.bytecode_version is not None and args.format != "lite":
        raise UsageError("--bytecode-version applies to --format lite only")
    if args.bytecode_version is not None and args.bytecode_version < 1:
        raise UsageError("--bytecode-version must be a positive integer")
    if args.keep_aux and "aux" not in card.output.optional_keys:
        raise UsageError(f"model {card.name!r} has no auxiliary head; drop --keep-aux")


def run_export(
    args: argparse.Namespace, card: ModelCard, weights: ResolvedWeights, registry: Registry
) -> int:
    """Export, install into ``--output``, print a summary; optionally verify."""
    from zoo.export.base import ExportOptions
    from zoo.export.pipeline import export_artifact

    input_size = args.input_size or tuple(card.preprocessing.input_size)
    if args.dynamic_size:  # the example must lie inside the range
        low, high = args.dynamic_size
        input_size = tuple(min(max(side, low), high) for side in input_size)
    extra: dict[str, object] = {}
    if args.quantize:
        from zoo.export.quantize import folder_fingerprint

        extra["quantize"] = args.quantize
        if args.format in ("torchscript", "lite"):
            extra["engine"] = args.engine or "qnnpack"
        extra["calibrate"] = folder_fingerprint(args.calibrate) if args.calibrate else "synthetic"
    if args.dynamic_size:
        extra["dynamic_size"] = list(args.dynamic_size)
    options = ExportOptions(
        input_size=input_size,
        keep_aux=args.keep_aux,
        bytecode_version=args.bytecode_version,
        extra=extra,
    )
    quiet = getattr(args, "quiet", False)

    def log(message: str) -> None:
        if not quiet:
            print(f"zoo: {message}", file=sys.stderr)

    outcome = export_artifact(card, weights, args.format, args.output, options,
                              registry=registry, log=log, calibrate_dir=args.calibrate)
    _summary(outcome, quiet)
    if args.verify:
        from zoo.cli.verify import cmd_verify

        return cmd_verify(argparse.Namespace(artifact=outcome.artifact, json=False))
    return 0


def _summary(outcome: ExportOutcome, quiet: bool) -> None:
    m = outcome.manifest
    print(outcome.artifact)
    if quiet:
        return
    facts = m.export
    size = m.artifact.size if m.artifact else 0
    lines = [
        f"format {facts.format} ({facts.method}), input {facts.input_shape}, "
        f"{human_bytes(size)}" + (f", bytecode v{facts.bytecode_version}"
                                  if facts.bytecode_version else ""),
        "optimizations: " + ", ".join(f"{k} {v}" for k, v in facts.optimizations.items()),
        *([f"int8 ({m.quantization.method}): SQNR {m.quantization.sqnr_db} dB, argmax "
           f"agreement {m.quantization.argmax_agreement:.1%} vs fp32 on "
           f"{m.quantization.calibration['source']} calibration"] if m.quantization else []),
        f"manifest {outcome.manifest_path.name}, checksums {outcome.sums_path.name}"
        + (f", operators {outcome.operators_path.name}" if outcome.operators_path else ""),
        "cache hit: no export work done" if outcome.cache_hit else "exported",
        f"check it with: zoo verify {outcome.artifact}",
    ]
    for line in lines:
        print(f"zoo: {line}", file=sys.stderr)
