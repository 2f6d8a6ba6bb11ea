"""``zoo sync``: make an output folder match a plan (zoo.toml) and lock the bytes (zoo.lock)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

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
  zoo sync --jobs 2        local worker processes (threads split between them)
  zoo sync --shard 2/4     a deterministic quarter of the plan (CI matrices); writes no lock:
                           each shard publishes (--store), a last `zoo sync` assembles the lock
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
    p.add_argument("--json", action="store_true",
                   help="one JSON object per artifact on stdout")
    p.add_argument("--wait", type=float, default=600.0, metavar="S",
                   help="seconds to wait for another zoo sync of the same folder (default 600)")
    from zoo.cli.store_options import add_store_options

    add_store_options(p, publish=False, sign=False)
    p.set_defaults(handler=cmd_sync)


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number 1..64")
    return int(text)


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 1 <= I <= N, e.g. 2/4")
    return int(match.group(1)), int(match.group(2))


def cmd_sync(args: argparse.Namespace) -> int:
    import json

    from zoo.sets.sync import StoreSpec, SyncOptions, sync

    store = None
    url = (args.store or "").strip() or None
    import os

    url = url or (None if args.no_store else os.environ.get("ZOO_STORE", "").strip() or None)
    if url:
        store = StoreSpec(url, tuple(args.store_option or []),
                          tuple(str(p) for p in args.trusted_key or []),
                          bool(args.require_signed))
    options = SyncOptions(locked=args.locked, dry_run=args.dry_run, jobs=args.jobs,
                          shard=args.shard, verify=args.verify, store=store, wait=args.wait)
    total = {"n": 0}

    def report(event: dict[str, Any]) -> None:
        total["n"] += 1
        if args.json:
            sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            sys.stdout.flush()
            return
        from zoo.cli.output import human_bytes

        size = human_bytes(event["size"]) if event.get("size") is not None else "?"
        print(f"zoo: {event['action']:<15} {event['key']}  ({size})", file=sys.stderr)

    result = sync(args.plan, options, report=report)
    if not args.json:
        what = "would sync" if args.dry_run else "synced"
        lock = f"; wrote {result.lock_path}" if result.wrote_lock else ""
        print(f"zoo: {what} {len(result.done)} artifacts into {result.output}{lock}",
              file=sys.stderr)
    return 0
