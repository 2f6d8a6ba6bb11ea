"""``zoo fetch NAME``: get a model's weights into the cache, verified, and print the path.

The weights options (``--weights``, ``--mirror``, ``--offline``, ...) are added by
:func:`add_weights_options` and turned into a :class:`~zoo.weights.resolve.ResolvedWeights` by
:func:`weights_from_args`, so any command that needs weights shares them.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from zoo.cli.export_opts import (
    add_export_options,
    export_request,
    publish_weights,
    run_export,
)
from zoo.cli.output import error_line
from zoo.errors import UsageError
from zoo.weights.policy import (  # light: no requests (zoo --help must stay fast)
    DEFAULT_DEADLINE,
    DEFAULT_MAX_SIZE,
    DEFAULT_MIN_RATE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    DownloadPolicy,
)

if TYPE_CHECKING:
    from zoo.catalog.schema import ModelCard
    from zoo.cli.export_opts import ExportRequest
    from zoo.weights.resolve import ResolvedWeights, WeightsMirror

T = TypeVar("T")

EPILOG = """\
weights sources (--weights):
  NAME                 one of the card's weights (see `zoo info NAME`); default: its default
  https://.../w.pth    a URL; append #sha256=HEX to pin its hash (pip style)
  PATH | file://PATH   a local file (hashed, used in place, not copied into the cache);
                       PATH#sha256=HEX pins it too
  none                 random init: everything produced is marked UNTRAINED
  user:password@ and ?query values of a URL never reach the cache's records or manifests

bounds (every download is bounded in time and space; all overridable):
  --timeout 30      stall window: an attempt that gets nothing, or less than --min-rate
                    (1 KiB/s), over 30 s is cut and retried; a trickle counts as a stall
  --retries 3       retries after a stall, a dropped connection or a 5xx (with backoff)
  --deadline 3600   the most one fetch spends on weights: waiting for another process that
                    downloads the same file, every attempt and retry (0: no limit); the
                    partial file is kept, so running it again resumes
  --max-size 4GiB   largest download whose size nobody pinned (cards pin sizes)
  free space is checked before a download of known size; a full disk removes the partial
  file; at most 10 redirects, each under the same rules as the URL you typed (https, or
  http to this machine / with --allow-http; never from https down to http)

environment:
  ZOO_HOME     cache root (default: the platform's user cache folder); see `zoo cache path`
               (a read-only ZOO_HOME serves cache hits)
  ZOO_MIRROR   like --mirror
  ZOO_OFFLINE  1/true/yes/on: use the cache only, never the network (like --offline);
               0/false/no/off or empty: online; anything else is an error
  ZOO_STORE    team store (like --store): card weights missing from the cache come from its
               weights/sha256/ first (cards pinning a full sha256; checked like a mirror),
               then from the URLs; with --format, the artifact is looked up there first

examples:
  zoo fetch deeplabv3_resnet50
  zoo fetch deeplabv3_resnet50 --mirror https://mirror.example.com
  zoo fetch deeplabv3_resnet50 --store s3://team-zoo/prod --publish   # seed the store
  zoo fetch single_conv --weights ./my_drone_weights.pth
  zoo fetch deeplabv3_resnet50 --format lite -o app/models
  zoo fetch deeplabv3_resnet50 --format lite --bytecode-version 7   # PyTorch Mobile 1.10 apps
  zoo fetch deeplabv3_resnet50 --format torchscript --keep-aux --input-size 400x400
  zoo fetch deeplabv3_resnet50 --format lite --quantize int8 --calibrate ./photos
  zoo fetch lraspp_mobilenet_v3_large --format pte --dynamic-size 128:1024   # zoo[executorch]
  zoo fetch lraspp_mobilenet_v3_large --format onnx                          # zoo[onnx]
"""


def add_weights_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose and fetch weights (shared by every weights-using command)."""
    g = parser.add_argument_group("weights")
    g.add_argument("--weights", metavar="SPEC", default=None,
                   help="weights NAME, URL[#sha256=HEX], PATH, or 'none' (default: the card's)")
    g.add_argument("--mirror", metavar="BASE", default=None,
                   help="fetch the card's weights from BASE: keeps each URL's path, replaces "
                   "scheme and host (env ZOO_MIRROR)")
    g.add_argument("--allow-http", action="store_true",
                   help="allow plain http:// to hosts other than loopback")
    g.add_argument("--offline", action="store_true", default=None,
                   help="use the cache only; fail at once if the weights are not there "
                   "(env ZOO_OFFLINE=1)")
    g.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="stall window: a connection, or a transfer getting less than "
                   "--min-rate over S seconds, is cut and retried (default 30)")
    g.add_argument("--min-rate", type=_size, default=DEFAULT_MIN_RATE, metavar="BYTES",
                   help="slowest transfer accepted, bytes/s averaged over --timeout, e.g. "
                   "10KiB (default 1KiB)")
    g.add_argument("--retries", type=_non_negative_int, default=DEFAULT_RETRIES, metavar="N",
                   help="retries on stalls, dropped connections and 5xx (default 3)")
    g.add_argument("--deadline", type=_non_negative_float, default=DEFAULT_DEADLINE,
                   metavar="S", help="the most one fetch spends getting weights, waiting for "
                   "another process's download and every retry included; 0: no limit "
                   f"(default {DEFAULT_DEADLINE:g})")
    g.add_argument("--max-size", type=_positive_size, default=DEFAULT_MAX_SIZE, metavar="SIZE",
                   help="largest download accepted when no size is pinned, e.g. 500MB, "
                   "8GiB (default 4GiB)")
    shown = g.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="show a progress bar even when stderr is not a terminal")
    shown.add_argument("--quiet", "-q", action="store_true",
                       help="no progress bar and no notes (errors and UNTRAINED still show)")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _size(text: str) -> int:
    """'4GiB' -> 4294967296; '500MB' -> 500000000 (one grammar: zoo._core.settings)."""
    from zoo._core.settings import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_size(text: str) -> int:
    value = _size(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 bytes")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return int(text)


def progress_mode(args: argparse.Namespace) -> str:
    """'always' with --progress, 'never' with --quiet, else 'auto'."""
    if getattr(args, "quiet", False):
        return "never"
    return "always" if getattr(args, "progress", False) else "auto"


def policy_from_args(args: argparse.Namespace) -> DownloadPolicy:
    """The :class:`~zoo.weights.policy.DownloadPolicy` the weights options in ``args`` ask
    for (commands without some of the options get that option's default). A bad
    ``ZOO_OFFLINE`` is an error here, even with --offline."""
    from zoo.weights.resolve import env_offline

    env_offline_value = env_offline()
    return DownloadPolicy(
        mirror=getattr(args, "mirror", None),
        offline=True if getattr(args, "offline", None) else env_offline_value,
        allow_http=getattr(args, "allow_http", False),
        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
        min_rate=getattr(args, "min_rate", DEFAULT_MIN_RATE),
        retries=getattr(args, "retries", DEFAULT_RETRIES),
        deadline=getattr(args, "deadline", DEFAULT_DEADLINE) or None,
        max_size=getattr(args, "max_size", DEFAULT_MAX_SIZE),
        progress=progress_mode(args),
    )


def check_weights_arg(args: argparse.Namespace) -> None:
    """An empty ``--weights`` is a usage error before any work (resolve_weights says the
    same, later)."""
    if args.weights is not None and not args.weights.strip():
        raise UsageError("--weights needs a value: NAME, URL, PATH or none")


def weights_from_args(args: argparse.Namespace, card: ModelCard,
                      store: WeightsMirror | None = None) -> ResolvedWeights:
    """Resolve the weights the options in ``args`` ask for (card weights from the team
    ``store`` first, when one is given); warns loudly when untrained."""
    from zoo.weights.resolve import resolve_weights

    weights = resolve_weights(card, args.weights, policy_from_args(args), store=store)
    if weights.untrained:
        untrained_warning(card.name)
    return weights


def untrained_warning(name: str) -> None:
    """The loud line every untrained result gets on stderr (even with --quiet)."""
    error_line(
        f"zoo: UNTRAINED: {name} has random weights (--weights none); its outputs are "
        "meaningless until you load trained weights"
    )


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``zoo fetch``."""
    p = sub.add_parser(
        "fetch", parents=[common], help="fetch weights; with --format, export an artifact",
        description="Fetch a model's weights into the cache (verified by sha256, resumable, "
        "safe to run concurrently) and print the cached file's path on stdout. With --format, "
        "also build the model, export it, and write the artifact, its manifest, its operator "
        "list and SHA256SUMS into -o DIR; the artifact's path is printed on stdout.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="model name (see `zoo list`)")
    add_weights_options(p)
    add_export_options(p)
    from zoo.cli.store_options import add_store_options

    add_store_options(p)
    p.set_defaults(handler=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    """Resolve the weights; print their path (nothing on stdout when untrained)."""
    from zoo.cli.main import load_registry

    registry = load_registry(args)
    card = registry.get(args.name)
    check_weights_arg(args)
    request = None
    if args.format is not None:
        request = export_request(args, card, registry)  # before any download or build
    elif args.sign is not None:
        raise UsageError("--sign signs published artifacts: add --format F --publish "
                         "(weights are checked against the card's pin, not signed)")
    from zoo.cli.store_options import store_from_args

    store = store_from_args(args, signatures=args.format is not None)
    if request is not None and store is None and not _export_may_be_cached(card, request):
        # an export will run: torch is imported while the weights hash (or download)
        weights = resolve_alongside_torch(lambda: weights_from_args(args, card, store))
    else:
        weights = weights_from_args(args, card, store)
    if request is not None:
        return run_export(request, args, card, weights, registry, store)
    if store is not None and store.publish_after:
        publish_weights(store, weights, getattr(args, "quiet", False))
    if weights.path is not None:
        sys.stdout.write(f"{weights.path}\n")
    return 0


def _export_may_be_cached(card: ModelCard, request: ExportRequest) -> bool:
    from zoo.export.cache import ArtifactCache
    from zoo.export.pipeline import artifact_file_name

    name = artifact_file_name(card, request.exporter, request.options)
    return ArtifactCache().may_hold(name)


def resolve_alongside_torch(resolve: Callable[[], T]) -> T:
    """``resolve()`` (hashing or downloading weights: file and network I/O, hashing that
    releases the GIL) on a thread while this thread imports torch, which the export that
    follows needs: a cold `zoo fetch --format` no longer waits for one, then the other.
    Its exception is raised here; Ctrl-C leaves the (daemon) thread behind, and a download
    it was making resumes next time."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = resolve()
        except BaseException as exc:  # raised in the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="zoo-weights", daemon=True)
    worker.start()
    import torch  # noqa: F401  (the export's import, made while the weights resolve)

    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
