"""The export half of ``zoo fetch``: ``--format`` and the options that shape an artifact."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cli.output import check_output_folder, human_bytes
from zoo.errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8")
MAX_SIDE = 8192  # the card schema's bound on input sizes

if TYPE_CHECKING:
    from collections.abc import Callable

    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard
    from zoo.export.base import Exporter, ExportOptions
    from zoo.export.custody import Custody
    from zoo.export.manifest import Manifest
    from zoo.export.pipeline import ExportOutcome
    from zoo.store.config import StoreConfig
    from zoo.weights.resolve import ResolvedWeights

_HW = re.compile(r"^(\d+)[xX](\d+)$")


def parse_hw(text: str) -> tuple[int, int]:
    """'400x600' -> (400, 600): height then width."""
    match = _HW.match(text.strip())
    if not match or 0 in (h := int(match.group(1)), w := int(match.group(2))):
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 520x520")
    if max(h, w) > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be at most {MAX_SIDE}")
    return h, w


def parse_range(text: str) -> tuple[int, int]:
    """'64:1024' -> (64, 1024)."""
    low, sep, high = text.partition(":")
    if not (sep and low.isdigit() and high.isdigit() and 0 < int(low) <= int(high)):
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX, e.g. 128:1024")
    if int(high) > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{text!r}: MAX must be at most {MAX_SIDE}")
    return int(low), int(high)


def add_export_options(p: argparse.ArgumentParser) -> None:
    """Add ``--format`` and friends to a parser."""
    g = p.add_argument_group("export (with --format)")
    g.add_argument("--format", "-f", metavar="F",
                   help="export to format F (see `zoo info NAME` for the matrix); without it "
                   "only the weights are fetched")
    g.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR",
                   help="folder for the artifact, manifest, operator list and SHA256SUMS "
                   "(default: current folder)")
    g.add_argument("--input-size", type=parse_hw, metavar="HxW",
                   help="example input height x width (default: the card's input_size)")
    g.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32, fp16 or int8 (default: the format's own, fp16 for coreml, "
                   "fp32 otherwise); int8 records SQNR and argmax agreement vs fp32")
    g.add_argument("--quantize", choices=("int8",), metavar="int8",
                   help="same as --precision int8")
    g.add_argument("--input-type", choices=("tensor", "image"), default="tensor",
                   help="coreml: take a normalised tensor (default) or an image with the "
                   "card's scale, mean and std folded in")
    g.add_argument("--bytecode-version", type=int, metavar="N",
                   help="lite only: backport to bytecode version N for older runtimes "
                   "(PyTorch Mobile 1.10 demo apps read <= 7)")
    g.add_argument("--keep-aux", action="store_true",
                   help="keep the auxiliary head (output dict gets 'aux'); dropped by default")
    g.add_argument("--engine", choices=("qnnpack", "x86"), default=None,
                   help="torchscript/lite int8 engine: qnnpack (ARM phones, default) or x86")
    g.add_argument("--calibrate", type=Path, metavar="DIR",
                   help="folder of images to calibrate int8 with (default: a synthetic set, "
                   "flagged in the manifest)")
    g.add_argument("--dynamic-size", type=parse_range, metavar="MIN:MAX",
                   help="pte: accept any height and width in MIN..MAX")
    g.add_argument("--verify", action="store_true",
                   help="run `zoo verify` on the artifact after exporting")


def _precision(args: argparse.Namespace, exporter: Exporter) -> str:
    if args.quantize and args.precision not in (None, args.quantize):
        raise UsageError(f"--quantize {args.quantize} contradicts --precision {args.precision}")
    return args.quantize or args.precision or exporter.default_precision()


def export_options(args: argparse.Namespace, card: ModelCard,
                   exporter: Exporter) -> ExportOptions:
    """The :class:`ExportOptions` the arguments ask for (a --calibrate folder is hashed: its
    content shapes the export identity)."""
    from zoo.export.base import ExportOptions, default_extra

    input_size = args.input_size or tuple(card.preprocessing.input_size)
    if args.dynamic_size:  # the example must lie inside the range
        low, high = args.dynamic_size
        if args.input_size and not all(low <= side <= high for side in args.input_size):
            raise UsageError("--input-size must lie inside --dynamic-size")
        input_size = tuple(min(max(side, low), high) for side in input_size)
    precision = _precision(args, exporter)
    calibrate = None
    if args.calibrate is not None:
        if precision != "int8":
            raise UsageError("--calibrate goes with --precision int8")
        if not args.calibrate.is_dir():
            raise UsageError(f"--calibrate {args.calibrate}: not a folder of images")
        from zoo.export.quantize import folder_fingerprint

        calibrate = folder_fingerprint(args.calibrate)
    extra = default_extra(precision, exporter.extra_options, engine=args.engine or None,
                          calibrate=calibrate)
    if args.bytecode_version is not None and args.bytecode_version < 1:
        raise UsageError("--bytecode-version must be a positive integer")
    return ExportOptions(
        input_size=input_size, precision=precision, keep_aux=args.keep_aux,
        bytecode_version=args.bytecode_version, dynamic_size=args.dynamic_size,
        input_type=args.input_type, extra=extra,
    )


@dataclass(frozen=True)
class ExportRequest:
    """What ``--format`` and its options ask for, turned into objects and checked once at
    the command line's edge (before any download or build)."""

    exporter: Exporter
    options: ExportOptions
    output: Path
    calibrate_dir: Path | None
    verify: bool


def export_request(args: argparse.Namespace, card: ModelCard,
                   registry: Registry | None = None) -> ExportRequest:
    """The checked :class:`ExportRequest` of ``args``; usage errors that need no work (unknown
    format, missing extra, unsupported model, bad output folder or option) raise here."""
    from zoo.export import available_formats, get_exporter

    host = registry.host if registry is not None else None
    formats = available_formats(host)
    if args.format not in formats:
        raise UsageError(f"unknown format {args.format!r}; choose from {', '.join(formats)}")
    exporter = get_exporter(args.format, host)
    exporter.check_available()
    reason = exporter.supports(card)
    if reason is not None:
        raise UsageError(f"model {card.name!r} does not export to {args.format}: {reason}")
    check_output_folder(args.output)  # a file, a file's child, a read-only folder: exit 2
    if args.keep_aux and "aux" not in card.output.optional_keys:
        raise UsageError(f"model {card.name!r} has no auxiliary head; drop --keep-aux")
    options = export_options(args, card, exporter)
    exporter.check_options(options, card)
    return ExportRequest(exporter, options, args.output, args.calibrate, args.verify)


def run_export(
    request: ExportRequest, args: argparse.Namespace, card: ModelCard,
    weights: ResolvedWeights, registry: Registry, store: StoreConfig | None = None,
) -> int:
    """Export (or pull from the team ``store``), install into ``--output``, print a summary;
    optionally publish and verify."""
    from zoo.cli.store_options import custody_from_args
    from zoo.export.pipeline import export_artifact

    custody = custody_from_args(args, store)
    quiet = getattr(args, "quiet", False)

    def log(message: str) -> None:
        if not quiet:
            print(f"zoo: {message}", file=sys.stderr)

    outcome = export_artifact(card, weights, request.exporter, request.output,
                              request.options, registry=registry, log=log,
                              calibrate_dir=request.calibrate_dir,
                              pull=store.pull_for_export if store is not None else None,
                              custody=custody, options_checked=True)
    _summary(outcome, quiet)
    if store is not None and store.publish_after:
        _publish_outcome(store, outcome, custody, weights, quiet, log)
    if request.verify:
        from zoo.cli.verify import provenance_from_args, verify_and_report

        return verify_and_report(outcome.artifact, provenance=provenance_from_args(args))
    return 0


def _publish_outcome(store: StoreConfig, outcome: ExportOutcome, custody: Custody,
                     weights: ResolvedWeights, quiet: bool, log: Callable[[str], None]) -> None:
    """``--publish``: send what this run installed to the store, unless it came from there.
    Signing is refused for bytes this machine did not build and no trusted key signed (the
    pipeline already avoids such bytes when ``--sign`` is given; this is the last guard)."""
    from zoo.export.custody import describe
    from zoo.store.errors import StoreRefusedError

    if outcome.provenance.get("kind") != "built" and \
            not custody.signed_by_trusted(outcome.provenance):
        if store.sign_key is not None:
            raise StoreRefusedError(
                f"refusing to sign {outcome.artifact.name}: {describe(outcome.provenance)}; "
                "only bytes exported on this machine or signed by a trusted key are signed "
                "(nothing was published)")
        log(f"not published: {describe(outcome.provenance)}")
        return
    if outcome.provenance.get("kind") == "pulled" and store.sign_key is None:
        log("not published: pulled from the team store (signed by a trusted key)")
        return
    from zoo.store.config import progress_printer

    result = store.publish(outcome.artifact, progress=None if quiet else progress_printer(),
                           custody_checked=True)
    signed = f", signed by {result.signer}" if result.signer else ", unsigned"
    log(f"published to {store.url}: {len(result.uploaded)} objects uploaded "
        f"({human_bytes(result.bytes_uploaded)}), {len(result.present)} already there"
        f"{signed}")
    publish_weights(store, weights, quiet)


def publish_weights(store: StoreConfig, weights: ResolvedWeights, quiet: bool) -> None:
    """Upload resolved weights to the store's ``weights/sha256/`` (nothing for untrained)."""
    from zoo.store.config import progress_printer

    if weights.path is None or weights.sha256 is None:
        if not quiet:
            print("zoo: no weights to publish (untrained)", file=sys.stderr)
        return
    size = weights.path.stat().st_size
    sent = store.open().publish_weights(weights.path, weights.sha256, size,
                                        progress=None if quiet else progress_printer())
    if not quiet:
        what = "uploaded" if sent else "already there"
        print(f"zoo: weights {weights.sha256[:16]}… ({human_bytes(size)}) {what}: "
              f"{store.url}", file=sys.stderr)


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
        *([_fidelity_line(m)] if m.quantization else []),
        f"manifest {outcome.manifest_path.name}, checksums {outcome.sums_path.name}"
        + (f", operators {outcome.operators_path.name}" if outcome.operators_path else ""),
        {"cache": "cache hit: no export work done",
         "store": "pulled from the team store (verified): no export work done",
         "export": "exported"}[outcome.source],
        f"check it with: zoo verify {outcome.artifact}",
    ]
    for line in lines:
        print(f"zoo: {line}", file=sys.stderr)


def _fidelity_line(m: Manifest) -> str:
    q = m.quantization
    assert q is not None
    if q.sqnr_db is None or q.argmax_agreement is None:
        return f"{q.scheme} ({q.method}): fidelity to fp32 {q.details.get('fidelity', 'unknown')}"
    return (f"{q.scheme} ({q.method}): SQNR {q.sqnr_db} dB, argmax agreement "
            f"{q.argmax_agreement:.1%} vs fp32 on {q.calibration['source']} calibration")
