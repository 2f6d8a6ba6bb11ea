"""``zoo cache list|verify|clear|prune|path``: look after the caches under ZOO_HOME
(downloaded weights, and the export cache of :mod:`zoo.export.cache`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zoo._core.settings import counted
from zoo.cli.output import error_line, human_bytes, print_json, stdout_console


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``zoo cache`` and its sub-commands."""
    p = sub.add_parser("cache", parents=[common], help="inspect or clean the weights cache",
                       description="The weights cache under ZOO_HOME: list, re-verify, clear.")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    p.set_defaults(handler=lambda _args: _usage(p))

    q = cache_sub.add_parser("list", parents=[common], help="cached weights files",
                             description="Every cached weights file: hash, size, models, URL "
                             "(with --artifacts: every cached export).")
    q.add_argument("--artifacts", action="store_true", help="list cached exports instead")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=cmd_list)

    q = cache_sub.add_parser("verify", parents=[common], help="re-hash every cached file",
                             description="Re-hash every cached weights file; delete those whose "
                             "bytes no longer match their hash; repair damaged records; report "
                             "leftovers of interrupted processes (temp files, unfinished "
                             "downloads). Exit 1 if any file was bad.")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=cmd_verify)

    q = cache_sub.add_parser("clear", parents=[common], help="delete cached weights/exports",
                             description="Delete every cached weights file (with unfinished "
                             "downloads and leftovers of interrupted processes) and cached "
                             "export, or only those of model NAME, or the weights of a hash "
                             "prefix.")
    q.add_argument("name", nargs="?", help="model name or sha256 prefix (8+ hex digits)")
    q.set_defaults(handler=cmd_clear)

    q = cache_sub.add_parser("prune", parents=[common], help="shrink the export cache to a size",
                             description="Remove the least recently used cached exports until "
                             "they take at most SIZE: bytes, or a number with K, M, G or T "
                             "(powers of 1024). Without --max-size, ZOO_CACHE_MAX (which fetch "
                             "also applies after each export).")
    q.add_argument("--max-size", metavar="SIZE", help="the budget (default: $ZOO_CACHE_MAX)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=cmd_prune)

    q = cache_sub.add_parser("path", parents=[common], help="print the cache root (ZOO_HOME)",
                             description="Print the cache root: $ZOO_HOME, or the platform's "
                             "user cache folder.")
    q.set_defaults(handler=cmd_path)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _row(entry: Any) -> dict[str, Any]:
    data = entry.to_json()
    data.pop("mtime_ns")
    return data


def cmd_list(args: argparse.Namespace) -> int:
    """``zoo cache list``."""
    from zoo.weights.cache import WeightsCache

    if args.artifacts:
        return _list_artifacts(args)
    rows = [_row(e) for e in WeightsCache().list()]
    if args.json:
        print_json(rows)
        return 0
    console = stdout_console()
    if not rows:
        console.print("the weights cache is empty")
        return 0
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col, justify in (("sha256", "left"), ("size", "right"), ("used by", "left"),
                         ("url", "left"), ("fetched", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        used = ", ".join(
            f"{ref['model']}:{ref['weights']}" if ref["weights"] else ref["model"]
            for ref in r["refs"]
        )
        table.add_row(r["sha256"][:12], human_bytes(r["size"]), escape(used or "-"),
                      escape(r["urls"][-1] if r["urls"] else "-"), r["fetched_at"] or "-")
    console.print(table)
    return 0


def _export_row(e: Any) -> dict[str, Any]:
    return {"key": e.key, "model": e.model, "file": e.artifact_file, "format": e.format,
            "size": e.size, "last_used": e.last_used, "path": str(e.folder)}


def _list_artifacts(args: argparse.Namespace) -> int:
    from zoo.export.cache import ArtifactCache

    rows = [_export_row(e) for e in ArtifactCache().entries()]
    if args.json:
        print_json(rows)
        return 0
    console = stdout_console()
    if not rows:
        console.print("no cached exports")
    for r in rows:
        console.print(f"{r['file']:<40} {r['format']:<12} {human_bytes(r['size']):>10}  "
                      f"{r['path']}", markup=False, highlight=False)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``zoo cache verify``: exit 1 when a bad file was found (and removed)."""
    from zoo.weights.cache import WeightsCache

    cache = WeightsCache()
    results = cache.verify(remove=True)
    art_json, art_lines, art_bad = _verify_artifacts()
    leftovers = cache.leftovers()
    bad = [r for r in results if not r.ok]
    if args.json:
        print_json({
            "files": [{"sha256": r.sha256, "path": str(r.path), "ok": r.ok, "actual": r.actual,
                       "problem": r.problem, "removed": not r.ok} for r in results],
            "leftovers": [{"path": str(x.path), "kind": x.kind, "size": x.size}
                          for x in leftovers],
            "repaired": [{"path": str(path), "problem": why} for path, why in cache.repaired],
            **art_json,
        })
    else:
        for r in bad:
            why = f"it holds {r.problem}" if r.problem else f"bytes hash to {r.actual}"
            error_line(f"zoo: BAD {r.path}: {why}; removed (the next run downloads it again)")
        for x in leftovers:
            print(f"leftover: {x.path} ({x.kind}, {human_bytes(x.size)})")
        summary = f"{len(results) - len(bad)} ok, {len(bad)} bad (removed)"
        if cache.repaired:
            summary += f", {len(cache.repaired)} damaged record(s) repaired"
        if leftovers:
            summary += (f", {len(leftovers)} leftover(s) of interrupted processes "
                        "(`zoo cache clear` removes them)")
        print(summary)
        print("\n".join(art_lines))
    return 1 if bad or art_bad else 0


def _verify_artifacts() -> tuple[dict[str, Any], list[str], bool]:
    """The export cache's part of ``zoo cache verify``: JSON fields, text lines, any bad."""
    from zoo.export.cache import ArtifactCache

    cache = ArtifactCache()
    results = cache.verify()
    leftovers = cache.leftovers()
    bad = [(e, why) for e, ok, why in results if not ok]
    data = {
        "exports": [{**_export_row(e), "ok": ok, "problem": None if ok else why,
                     "removed": not ok} for e, ok, why in results],
        "export_leftovers": [{"path": str(x.path), "kind": x.kind, "size": x.size}
                             for x in leftovers],
        "exports_repaired": [{"key": key, "problem": why} for key, why in cache.repaired],
    }
    lines = [f"leftover: {x.path} ({x.kind}, {human_bytes(x.size)})" for x in leftovers]
    summary = f"exports: {len(results) - len(bad)} ok, {len(bad)} bad (removed)"
    records = {key for key, _why in cache.repaired} - {e.key for e, _why in bad}
    if records:
        summary += f", {len(records)} damaged record(s) repaired"
    if leftovers:
        summary += (f", {len(leftovers)} leftover(s) of interrupted processes "
                    "(`zoo cache clear` removes them)")
    return data, [*lines, summary], bool(bad)


def cmd_clear(args: argparse.Namespace) -> int:
    """``zoo cache clear [NAME]``."""
    from zoo.export.cache import ArtifactCache
    from zoo.weights.cache import WeightsCache

    weights = WeightsCache()
    leftovers = weights.leftovers() if args.name is None else []
    removed = weights.clear(args.name)
    if leftovers:
        print(f"removed {len(leftovers)} leftover(s) of interrupted processes "
              f"({human_bytes(sum(x.size for x in leftovers))})")
    artifacts = ArtifactCache()
    export_leftovers = artifacts.remove_leftovers() if args.name is None else []
    exports = artifacts.clear(args.name)
    if export_leftovers:
        print(f"removed {len(export_leftovers)} leftover(s) of interrupted exports "
              f"({human_bytes(sum(x.size for x in export_leftovers))})")
    if exports:
        print(f"removed {counted(len(exports), 'cached export')} "
              f"({human_bytes(sum(e.size for e in exports))})")
    freed = sum(e.size for e in removed)
    what = f" for {args.name}" if args.name else ""
    if args.name and not removed:
        print(f"no cached weights{what}")
    else:
        print(f"removed {counted(len(removed), 'file')}{what} "
              f"({human_bytes(freed)})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """``zoo cache prune [--max-size SIZE]``: evict least recently used exports."""
    from zoo.errors import UsageError
    from zoo.export.cache import BUDGET_ENV, ArtifactCache, parse_size

    cache = ArtifactCache()
    budget = cache.budget
    if args.max_size is not None:
        try:
            budget = parse_size(args.max_size)
        except ValueError:
            raise UsageError(f"--max-size {args.max_size[:40]!r}: not a size; use bytes or a "
                             "number with K, M, G or T (powers of 1024), e.g. 20G") from None
    if budget is None:
        raise UsageError(f"no size budget: give --max-size SIZE or set {BUDGET_ENV}")
    removed = cache.prune(budget)
    kept = cache.entries()
    if args.json:
        print_json({"budget": budget, "removed": [_export_row(e) for e in removed],
                    "kept": [_export_row(e) for e in kept]})
        return 0
    print(f"removed {counted(len(removed), 'cached export')} "
          f"({human_bytes(sum(e.size for e in removed))}); {len(kept)} kept "
          f"({human_bytes(sum(e.size for e in kept))} of {human_bytes(budget)})")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    """``zoo cache path``."""
    from zoo.paths import zoo_home

    print(zoo_home())
    return 0
