"""``zoo sync``: make an output folder match a plan (zoo.toml) and lock the bytes (zoo.lock)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

EPILOG = """\
the plan (zoo.toml, at the app repository's root):
  [output]
  folder = "models"            # relative to zoo.toml
  layout = "{model}"           # sub-folder per artifact: {model} {format} {precision} {size}

  [[artifacts]]
  models = ["lraspp_mobilenet_v3_large", "deeplabv3_*"]
  formats = ["pte", "tflite", "onnx"]
  precisions = ["fp32", "int8"]   # default: each format's own
  input_sizes = ["520x520"]       # default: each card's
  weights = "default"             # or a weights NAME, or "none"

modes:
  zoo sync                 store hit, cache hit or export for each artifact; writes zoo.lock
  zoo sync --locked        install exactly the locked bytes; fails, changing nothing, if the
                           plan and the lock disagree or any byte differs (for app CI)
  zoo sync --dry-run       what each artifact would be (present, cache, pull or export), sizes
  zoo sync --jobs 2        local worker processes (each export on one torch thread,
                           in every mode, so the bytes do not depend on the mode)
  zoo sync --shard 2/4     a deterministic quarter of the plan (CI matrices); writes no lock:
                           each shard publishes to --store, and a last `zoo sync --store URL`
                           assembles the lock from the store (pulls, no export work)
  zoo sync --ray [ADDR]    one Ray task per export on an existing Ray cluster (HOST:PORT of
                           the head node, ray://HOST:PORT, or RAY_ADDRESS / the local one);
                           with --store each task publishes there, else returns the bytes
  zoo sync --publish       publish what this run exported to --store (the lock names the
                           records); add --sign KEY to sign them
  `zoo schema plan` prints the plan's JSON Schema.
"""


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``zoo sync``."""
    p = sub.add_parser(
        "sync", parents=[common], help="make a folder match a plan (zoo.toml) and lock it",
        description="Make the plan's output folder hold exactly the artifacts it lists: each "
        "one is a local cache hit, a team-store pull or an export. Everything is staged first "
        "and moved into place only when all of it is ready; zoo.lock is written last.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", type=Path, default=Path("zoo.toml"), metavar="PATH",
                   help="the plan file (default: ./zoo.toml)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--locked", action="store_true",
                      help="install exactly the bytes zoo.lock records, or fail")
    mode.add_argument("--dry-run", action="store_true", help="say what would happen")
    p.add_argument("--jobs", "-j", type=_jobs, default=1, metavar="N",
                   help="export in N local processes (default 1)")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="only the I-th of N deterministic slices of the plan")
    p.add_argument("--verify", action="store_true",
                   help="re-hash artifacts already in place (default: size and stat)")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run each export as a task on an existing Ray cluster (needs "
                   "zoo[ray]; ADDRESS: HOST:PORT or ray://HOST:PORT; default RAY_ADDRESS, "
                   "else the cluster on this machine)")
    p.add_argument("--ray-retries", type=_retries, default=3, metavar="N",
                   help="times Ray reruns a task whose worker or node dies (default 3)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per finished artifact on stdout")
    p.add_argument("--wait", type=float, default=600.0, metavar="S",
                   help="seconds to wait for another zoo sync of the same folder (default 600)")
    from zoo.cli.store_options import add_store_options

    add_store_options(p, no_store=True, require=True)
    p.set_defaults(handler=cmd_sync)


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number 1..64")
    return int(text)


def _retries(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number 0..100")
    return int(text)


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 1 <= I <= N, e.g. 2/4")
    return int(match.group(1)), int(match.group(2))


def cmd_sync(args: argparse.Namespace) -> int:
    from zoo.errors import UsageError
    from zoo.sets.sync import StoreSpec, SyncOptions, sync

    store = None
    url = (args.store or "").strip() or None
    import os

    url = url or (None if args.no_store else os.environ.get("ZOO_STORE", "").strip() or None)
    sharded = args.shard is not None and args.shard[1] > 1
    if args.publish and not url:
        raise UsageError("--publish needs a store: pass --store URL or set ZOO_STORE")
    if args.sign is not None and not args.publish and not sharded:
        raise UsageError("--sign only makes sense with --publish (or --shard I/N)")
    if args.sign is not None and not url:
        raise UsageError("--sign signs what is published to the team store: pass --store URL "
                         "(or set ZOO_STORE)")
    if args.sign is not None:  # a key that does not load fails here, before any export
        from zoo.store.keys import load_signing_key

        load_signing_key(args.sign)
    if args.ray is not None and args.jobs > 1:
        raise UsageError("--ray and --jobs both choose where exports run: use one")
    if args.ray is not None:
        from zoo.sets.on_ray import resolve_address

        resolve_address(args.ray)  # a malformed address is a usage error before any work
    if url:
        store = StoreSpec(url, tuple(args.store_option or []),
                          tuple(str(p) for p in args.trusted_key or []),
                          bool(args.require_signed),
                          publish=bool(args.publish or sharded) and not args.locked,
                          sign=str(args.sign) if args.sign is not None else None)
    options = SyncOptions(locked=args.locked, dry_run=args.dry_run, jobs=args.jobs,
                          shard=args.shard, verify=args.verify, store=store, wait=args.wait,
                          ray=args.ray, ray_retries=args.ray_retries)
    from zoo.cli.sync_progress import SyncDisplay

    with SyncDisplay(as_json=args.json, enabled=None if not args.dry_run else False) as show:
        result = sync(args.plan, options, report=show.finished, watch=show.watch)
    if not args.json:
        what = "would sync" if args.dry_run else "synced"
        lock = f"; wrote {result.lock_path}" if result.wrote_lock else ""
        print(f"zoo: {what} {len(result.done)} artifacts into {result.output}{lock}",
              file=sys.stderr)
    return 0
