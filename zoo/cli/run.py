"""``zoo run NAME IMAGE...``: segment images with the eager model or an exported artifact.

For each image ``foo.jpg`` it writes ``foo.labels.png`` (class index per pixel), ``foo.color.png``
(the palette's colours) and ``foo.overlay.png`` (the image blended with the colours) into
``-o DIR``, each exactly the image's size, and prints the classes present with their pixel
shares. Heavy imports (torch, Pillow) happen in the handler, not when the parser is built.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.cli.fetch import add_weights_options
from zoo.errors import UsageError, ZooError

if TYPE_CHECKING:
    from rich.console import Console

    from zoo.inference.predictor import Predictor

OUTPUTS = ("labels", "color", "overlay")
EPILOG = """\
outputs, for an image foo.jpg, in -o DIR:
  foo.labels.png    the class index of every pixel (8-bit grey; 16-bit with > 256 classes)
  foo.color.png     every pixel in its class colour (--palette picks the card's palette)
  foo.overlay.png   the image blended with the colours (--overlay ALPHA)

images are checked from their headers before anything is decoded or loaded: PNG, JPEG, BMP,
GIF, TIFF, WebP, PPM, JPEG 2000, TGA (AVIF/HEIF where Pillow reads them); at most
ZOO_MAX_IMAGE_PIXELS pixels (default 89478485, Pillow's own limit) and a side ratio of at
most ZOO_MAX_IMAGE_ASPECT (default 20); raise them for images you trust. The three PNGs of an
image are written all or none.

an --artifact runs in a confined child process, like `zoo verify`'s golden run: a private
copy of exactly the bytes its manifest records, a memory ceiling (--memory-limit, default
8GiB), no network, no writes outside its folder (docs/security.md, "Confined runs");
--in-process loads it into zoo's own process instead, unconfined.

the eager model's weights come from the cache, then the team store when ZOO_STORE is set
(cards pinning a full sha256, checked like any mirror; unset it to skip), then the URLs.

examples:
  zoo run lraspp_mobilenet_v3_large street.jpg -o out
  zoo run deeplabv3_resnet50 photos/*.jpg --palette seed_app -o out
  zoo run single_conv drone.png --weights ./my_drone_weights.pth --json
  zoo run deeplabv3_resnet50 cat.jpg --artifact app/models/deeplabv3_resnet50.ptl -o out
"""


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be within 0..1")
    return value


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``zoo run``."""
    p = sub.add_parser(
        "run", parents=[common], help="segment images with a model or an exported artifact",
        description="Segment images the way an app should: the card's preprocessing (resize "
        "policy, mean/std, colour order, NCHW, height and width never swapped), the eager "
        "model with its weights or an exported artifact (--artifact, read with its manifest), "
        "the argmax read by the output contract and mapped back to the image's own size.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="model name (see `zoo list`)")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    p.add_argument("--artifact", type=Path, metavar="PATH",
                   help="run this exported artifact (.pt, .ptl, ...) instead of the eager model; "
                   "its manifest must sit beside it")
    p.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR",
                   help="folder for the PNGs (default: current folder)")
    p.add_argument("--palette", metavar="NAME", default=None,
                   help="colour with the card's named palette (see `zoo info NAME`); "
                   "default: its default palette")
    p.add_argument("--overlay", type=_alpha, default=0.5, metavar="ALPHA",
                   help="opacity of the colours in the overlay, 0..1 (default 0.5)")
    p.add_argument("--memory-limit", type=_memory_size, default=None, metavar="SIZE",
                   help="memory ceiling of the confined process that runs the --artifact, "
                   "e.g. 16GiB (default 8GiB)")
    p.add_argument("--in-process", action="store_true",
                   help="load the --artifact into zoo's own process, unconfined (it can then "
                   "write files and use the network like any code you run); default: a "
                   "confined child process")
    p.add_argument("--json", action="store_true", help="machine-readable results")
    add_weights_options(p)
    p.set_defaults(handler=cmd_run)


def _memory_size(text: str) -> int:
    from zoo.cli.verify import memory_size

    return memory_size(text)


def _check_inputs(args: argparse.Namespace) -> None:
    """Usage errors that need no model: missing, unreadable or over-limit images (read from
    their headers, nothing decoded), clashing output names, an output that is not a folder."""
    from zoo.cli.output import check_output_folder
    from zoo.inference.preprocessing import image_size

    check_output_folder(args.output)
    seen: dict[str, Path] = {}
    for path in args.images:
        image_size(path)
        if path.stem in seen:
            raise UsageError(f"{seen[path.stem]} and {path} would both write "
                             f"{path.stem}.*.png into {args.output}; run them separately")
        seen[path.stem] = path


def _predictor(args: argparse.Namespace) -> Predictor:
    from zoo.cli.fetch import untrained_warning, weights_from_args
    from zoo.cli.main import load_registry

    if args.artifact is None:
        for flag, value in (("--in-process", args.in_process),
                            ("--memory-limit", args.memory_limit)):
            if value:
                raise UsageError(f"{flag} applies to an --artifact; the eager model always "
                                 "runs in zoo's process (drop it, or add --artifact)")
        registry = load_registry(args)
        card = registry.get(args.name)
        card.palette_named(args.palette)  # an unknown palette fails before any download
        from zoo.inference.predictor import eager_predictor
        from zoo.store.config import weights_store

        store = weights_store(None, True if args.offline else None)  # ZOO_STORE, if set
        return eager_predictor(card, weights_from_args(args, card, store), registry)
    if args.weights is not None:
        raise UsageError("--weights applies to the eager model; an --artifact has its weights "
                         "built in (drop one of them)")
    if args.in_process and args.memory_limit:
        raise UsageError("--memory-limit bounds the confined child; --in-process runs the "
                         "artifact in zoo's own process (drop one of them)")
    import warnings

    from zoo.inference.predictor import UntrainedWarning, load_artifact, read_manifest

    _, manifest = read_manifest(args.artifact)
    if manifest.model.name != args.name:
        raise UsageError(f"{args.artifact} is an export of {manifest.model.name!r}, not "
                         f"{args.name!r}; run `zoo run {manifest.model.name} ... --artifact "
                         f"{args.artifact}`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWarning)  # said below, the CLI's way
        predictor = load_artifact(args.artifact, in_process=args.in_process,
                                  memory_limit=args.memory_limit)
    try:
        predictor.palette_named(args.palette)
    except BaseException:
        predictor.close()
        raise
    if predictor.untrained:
        untrained_warning(predictor.name)
    if predictor.unconfined and not args.in_process:
        from zoo._core.log import warn

        warn(f"the artifact runs unconfined: {predictor.unconfined} (see docs/security.md)")
    return predictor


def _segment(predictor: Predictor, path: Path, args: argparse.Namespace,
             palette: list[tuple[int, int, int]]) -> dict[str, Any]:
    from zoo.inference.postprocessing import (
        class_shares,
        colorize,
        label_image,
        overlay,
        png_bytes,
        postprocess,
    )
    from zoo.inference.preprocessing import load_image, preprocess

    image = load_image(path)
    width, height = image.size
    x = preprocess(image, predictor.preprocessing)
    labels = postprocess(predictor(x), predictor.output, size=(height, width))
    colors = colorize(labels, palette)
    pictures = {"labels": label_image(labels), "color": colors,
                "overlay": overlay(image, colors, args.overlay)}
    files = {args.output / f"{path.stem}.{kind}.png": png_bytes(pictures[kind])
             for kind in OUTPUTS}
    _write_all(files)
    written = {kind: str(dest) for kind, dest in zip(OUTPUTS, files, strict=True)}
    return {
        "image": str(path),
        "height": height,
        "width": width,
        "input_shape": list(x.shape),
        "outputs": written,
        "classes": [s.as_dict() for s in class_shares(labels, predictor.labels)],
    }


def _write_all(files: dict[Path, bytes]) -> None:
    """Write every file, all or none: each goes to a temp file beside it first and only when
    all are written (and synced) do they replace their destinations, so a full disk never
    leaves a half set of PNGs (or half a PNG) for an app to find."""
    import tempfile

    from zoo._core.fs import FILE_MODE

    temps: list[tuple[str, Path]] = []
    dest = next(iter(files))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for dest, data in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            temps.append((tmp, dest))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, FILE_MODE)
        for tmp, dest in temps:
            os.replace(tmp, dest)
    except OSError as exc:
        raise _write_error(dest, exc) from None
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


def _write_error(dest: Path, exc: OSError) -> ZooError:
    """A failed PNG write as one line: a bad ``-o`` is the user's (exit 2), a full or
    failing disk a runtime failure (exit 1)."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ZooError(f"cannot write {dest}: {reason}; nothing was written for this image; "
                        "free some space or use another -o folder")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.EACCES,
                     errno.EPERM):
        return UsageError(f"cannot write {dest}: {reason}; name a folder you can write with -o")
    return ZooError(f"cannot write {dest}: {reason}")


def _progress_wanted(args: argparse.Namespace) -> bool:
    if getattr(args, "quiet", False) or len(args.images) < 2:
        return False
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()


def cmd_run(args: argparse.Namespace) -> int:
    """Check the inputs, load the model once, segment every image, report."""
    _check_inputs(args)
    with _predictor(args) as predictor:
        return _run_all(predictor, args)


def _run_all(predictor: Predictor, args: argparse.Namespace) -> int:
    palette = predictor.palette_named(args.palette)
    results = []
    if _progress_wanted(args):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = Console(stderr=True, force_terminal=bool(getattr(args, "progress", False)))
        with Progress(TextColumn("segmenting"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), console=console) as bar:
            task = bar.add_task("", total=len(args.images))
            for path in args.images:
                bar.update(task, description=path.name)
                results.append(_segment(predictor, path, args, palette))
                bar.advance(task)
    else:
        results = [_segment(predictor, path, args, palette) for path in args.images]
    report = {
        "model": predictor.name,
        "runtime": predictor.runtime,
        "source": predictor.source,
        "untrained": predictor.untrained,
        "in_process": predictor.runtime == "eager" or args.in_process,
        "confinement": predictor.confinement,
        "palette": args.palette or "default",
        "colors": [list(c) for c in palette],
        "images": results,
    }
    if args.json:
        from zoo.cli.output import print_json

        print_json(report)
    else:
        from zoo.cli.output import stdout_console

        _print_tables(stdout_console(), report)
    return 0


def _print_tables(console: Console, report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    palette = report["colors"]
    for result in report["images"]:
        console.print(f"[bold]{escape(result['image'])}[/]  {result['height']}x{result['width']} "
                      f"(HxW), model input {result['input_shape']}")
        table = Table(box=None, header_style="bold")
        for col, justify in (("class", "right"), ("label", "left"), ("colour", "left"),
                             ("pixels", "right"), ("share", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for row in result["classes"]:
            r, g, b = palette[row["class"]]
            swatch = f"[on rgb({r},{g},{b})]  [/] {r},{g},{b}"
            table.add_row(str(row["class"]), escape(row["label"]), swatch,
                          f"{row['pixels']:,}", f"{row['share']:.1%}")
        console.print(table)
        outputs = ", ".join(escape(p) for p in result["outputs"].values())
        console.print(f"[dim]wrote {outputs}[/]")
    runtime = report["runtime"]
    where = "eager model" if runtime == "eager" else f"{runtime} artifact"
    note = " [bold red]UNTRAINED[/]" if report["untrained"] else ""
    console.print(f"[dim]{report['model']} ({where}: {escape(report['source'])}){note}[/]")
