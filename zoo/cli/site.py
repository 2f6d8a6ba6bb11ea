"""``zoo site -o DIR``: the static catalogue site, from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.cli.store_options import STORE_ENV

EPILOG = f"""\
examples:
  zoo site -o site                                 every card: index, a page per model
  zoo site -o site --bench lraspp_mobilenet_v3_large.bench.json
  zoo site -o site --store s3://team-zoo/prod --trusted-key team.pub
                                                   + what the store holds, and the bench
                                                   records `zoo bench --publish` sent there
  zoo fetch lraspp_mobilenet_v3_large --format onnx -o models
  zoo site -o site --demo models/lraspp_mobilenet_v3_large.onnx
                                                   + a page that runs it in the browser
  zoo site -o site --demo lraspp_mobilenet_v3_large
                                                   the same, from this machine's export
                                                   cache (what that `zoo fetch` left there)

Open DIR/index.html in a browser: the site needs no server and no network. Overlays of the
golden scene (and --images) are drawn for models whose weights are in this machine's weights
cache (`zoo fetch NAME`); the build never downloads. The same inputs give the same bytes.
environment: {STORE_ENV} (the store URL), ZOO_TRUSTED_KEYS (public keys, like --trusted-key).
"""


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``zoo site``."""
    from zoo.cli.store_options import add_store_options

    p = sub.add_parser(
        "site", parents=[common], help="build a static catalogue site (HTML, offline)",
        description="Write a static site for every registered model: an index with search "
        "and filters, and a page per model (preprocessing, output contract, labels and "
        "palettes, formats, bench plots, overlays, app snippets), optionally what the team "
        "store holds and in-browser demos of ONNX artifacts. The folder is replaced as a "
        "whole.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="folder for the site (new, empty, or a site zoo built before)")
    p.add_argument("--bench", nargs="+", type=Path, default=[], metavar="FILE",
                   help="bench records (`zoo bench NAME` writes NAME.bench.json) to plot")
    p.add_argument("--images", nargs="+", type=Path, default=[], metavar="IMG",
                   help="your images, overlaid with each model whose weights are cached")
    p.add_argument("--no-overlays", action="store_true",
                   help="skip the overlays (no torch, no models run)")
    p.add_argument("--demo", nargs="+", default=[], metavar="ONNX|NAME",
                   help="ONNX artifacts (`zoo fetch NAME --format onnx`) or model names (their "
                   "ONNX export in this machine's export cache; never exported here) to run in "
                   "the browser with onnxruntime-web, one demo page each")
    p.add_argument("--ort-wasm", type=Path, default=None, metavar="DIR",
                   help="onnxruntime-web's dist folder (default: clients/web/node_modules, "
                   "from `npm install` there); never a CDN")
    add_store_options(p, publish=False, sign=False, require=False)  # --no-store: ignore ZOO_STORE
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.set_defaults(handler=cmd_site)


def cmd_site(args: argparse.Namespace) -> int:
    from zoo._core.settings import counted
    from zoo.cli.main import load_registry
    from zoo.cli.output import error_line, human_bytes, shown
    from zoo.cli.store_options import store_from_args
    from zoo.site.build import SiteOptions, build_site

    store = store_from_args(args)  # --store, else ZOO_STORE, else none
    options = SiteOptions(store=store, bench=list(args.bench), images=list(args.images),
                          demo=list(args.demo), ort_wasm=args.ort_wasm,
                          overlays=not args.no_overlays)
    say = None if args.quiet else (lambda m: error_line(f"zoo: {m}"))
    report = build_site(load_registry(args), args.output, options, say=say)
    if args.quiet:
        return 0
    lines = [f"wrote {shown(str(report.out / 'index.html'))}: {report.models} models, "
             f"{report.pages} pages, {report.files} files, {human_bytes(report.bytes)}"]
    if report.overlays:
        lines.append(f"  overlays: {', '.join(report.overlays)}")
    if report.bench_records:
        lines.append(f"  bench records: {report.bench_records}")
    if store is not None and report.store_error is not None:
        lines.append(f"  team store: NOT READ: {shown(report.store_error)}")
    elif store is not None:
        refused = f", {report.store_bench_refused} refused" if report.store_bench_refused \
            else ""
        lines.append(f"  team store: {counted(report.store_artifacts, 'artifact')}, "
                     f"{counted(report.store_bench, 'bench record')}{refused} (see store.html)")
    if report.demos:
        lines.append(f"  demos: {', '.join(report.demos)}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
