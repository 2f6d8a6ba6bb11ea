"""``zoo publish`` and ``zoo store list|verify``: the team store from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zoo.cli.store_options import STORE_ENV, add_store_options

PUBLISH_EPILOG = f"""\
examples:
  zoo fetch deeplabv3_resnet50 --format lite -o models
  zoo publish models --store s3://team-zoo/prod --sign team.key
  zoo publish models/deeplabv3_resnet50.ptl --store file:///shared/zoo --json
  zoo publish models --store s3://team-zoo/prod --store-option endpoint_url=https://minio.lan

The store keeps content-addressed objects (objects/sha256/HEX) and one immutable record per
publish (records/IDENTITY/HEX.json), written last. The weights the artifact was exported from
go up too (weights/sha256/HEX) when this machine's weights cache holds them (--no-weights:
not), so other machines fetch them from the store instead of the cards' URLs. Objects the
store already has are not sent again; large files go up as resumable multipart uploads.
Credentials come the way boto and fsspec take them (AWS_PROFILE, AWS_ACCESS_KEY_ID, ~/.aws,
--store-option key=...).
environment: {STORE_ENV} (the store URL), ZOO_KEY_PASSPHRASE (an encrypted --sign key).
"""

STORE_EPILOG = f"""\
examples:
  zoo store list --store s3://team-zoo/prod
  zoo store list 'deeplab*' --json
  zoo store verify --trusted-key team.pub
  zoo store index --sign team.key        # in CI after publishing: fast listings for everyone

environment: {STORE_ENV} (the store URL), ZOO_TRUSTED_KEYS (public keys, like --trusted-key).
"""


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``zoo publish`` and ``zoo store``."""
    p = sub.add_parser(
        "publish", parents=[common], help="publish an exported artifact to the team store",
        description="Upload an artifact that `zoo fetch --format F -o DIR` wrote (the folder, "
        "the artifact or its manifest) with its manifest, operators list and a SHA256SUMS to "
        "the team store, then write its record (signed with --sign).",
        epilog=PUBLISH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="DIR_OR_ARTIFACT", type=_path,
                   help="export folder, artifact or <artifact>.manifest.json")
    add_store_options(p, publish=False, no_store=False, require=False)
    p.add_argument("--no-weights", action="store_true",
                   help="do not upload the weights the artifact was exported from")
    _output_options(p)
    p.set_defaults(handler=cmd_publish)

    p = sub.add_parser("store", parents=[common], help="browse or audit the team store",
                       description="List what the team store holds, or re-check it.",
                       epilog=STORE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    store_sub = p.add_subparsers(dest="store_command", metavar="ACTION")
    p.set_defaults(handler=lambda _args: _usage(p))

    q = store_sub.add_parser(
        "list", parents=[common], help="published artifacts",
        description="Every published artifact, newest first: model, format, precision, size, "
        "who signed it and when. Records that cannot be read are reported after the table.")
    q.add_argument("pattern", nargs="?", help="glob on model names, e.g. 'deeplab*'")
    q.add_argument("--limit", type=_count, default=None, metavar="N",
                   help="show at most N records")
    add_store_options(q, publish=False, sign=False, no_store=False, require=False)
    q.add_argument("--full", action="store_true",
                   help="list records/ key by key and read no index (slower on big "
                   "stores; shows exactly the records there now)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=cmd_list)

    q = store_sub.add_parser(
        "index", parents=[common], help="write a snapshot of the records (fast listings)",
        description="Write a snapshot of every record under index/ (needs write access, like "
        "publishing; run it in CI after publishes, like `git gc`): the record files in a few "
        "parts and a head, signed with --sign. `zoo store list` then reads the snapshot and "
        "the journal of later publishes instead of every record one by one, and still checks "
        "each record it shows. Readers with --trusted-key use only a snapshot a trusted key "
        "signed. Nothing is deleted.")
    add_store_options(q, publish=False, no_store=False, trusted=False, require=False)
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=cmd_index)

    q = store_sub.add_parser(
        "revoke", parents=[common], help="withdraw a published record (signed tombstone)",
        description="Withdraw one published record for good: write a tombstone signed with "
        "--sign KEY under revocations/<identity>/. Readers refuse the record when they trust "
        "that key, or when that key signed the record itself, even if someone restores a "
        "deleted record file. Nothing is deleted.",
        epilog="examples:\n  zoo store list --json | jq -r '.records[].record'\n"
        "  zoo store revoke 1f2e3d4c5b6a --sign team.key --reason 'exported with bad weights'"
        "\n", formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("record", metavar="RECORD",
                   help="the record's sha256 (12+ hex digits) or its key "
                   "records/IDENTITY/SHA256.json")
    q.add_argument("--reason", default="", help="why (printable text, kept in the tombstone)")
    add_store_options(q, publish=False, no_store=False, trusted=False, require=False)
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=cmd_revoke)

    q = store_sub.add_parser(
        "verify", parents=[common], help="re-check every record and object",
        description="Re-check every record (its name, fields and signature; with "
        "--trusted-key, that a trusted key signed it) and every object it names (present, "
        "size, sha256: each object is downloaded and hashed) and every weights file (its "
        "bytes must hash to its name) and the index (snapshot heads, their parts and record "
        "copies). Reports objects no record "
        "names (left by interrupted publishes). Never deletes anything. Exit 1 on any "
        "problem.")
    add_store_options(q, publish=False, sign=False, no_store=False, require=False)
    _output_options(q)
    q.set_defaults(handler=cmd_verify)


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true", default=None,
                       help="show progress even when stderr is not a terminal")
    shown.add_argument("--quiet", "-q", action="store_true", help="no progress")


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _config(args: argparse.Namespace) -> Any:
    from zoo.cli.store_options import store_from_args

    return store_from_args(args, required=True)


def _progress(args: argparse.Namespace) -> Any:
    from zoo.store.config import progress_printer

    if getattr(args, "quiet", False):
        return None
    return progress_printer(True if getattr(args, "progress", None) else None)


def cmd_publish(args: argparse.Namespace) -> int:
    from zoo.cli.output import print_json
    from zoo.store.embedded import embedded_problems
    from zoo.store.export_folder import collect, exports_in

    config = _config(args)
    progress = _progress(args)
    paths = exports_in(args.path)
    exports = []
    for path in paths:  # every export is hashed once and checked before anything is uploaded
        local = collect(path)
        config.open().check_publishable(local, embedded_problems)
        if config.sign_key is not None and (why := config.signing_refusal(local)) is not None:
            from zoo.store.errors import StoreRefusedError

            raise StoreRefusedError(f"refusing to sign {path}: {why}; nothing was published")
        exports.append(local)
    reports = []
    for local in exports:
        result = config.publish(local, progress=progress, custody_checked=True)
        weights = None if args.no_weights else \
            config.publish_weights_of(result, progress=progress)
        reports.append({**result.as_dict(), "weights": weights})
        if not args.json:
            _print_published(result, weights)
    if args.json:
        print_json(reports[0] if len(paths) == 1 and paths[0] == args.path else
                   {"store": config.url, "artifacts": reports})
    return 0


def _print_published(result: Any, weights: dict[str, Any] | None) -> None:
    from rich.markup import escape

    from zoo.cli.output import human_bytes, stdout_console

    st = result.record.statement
    console = stdout_console()
    verb = "already published" if result.already else "published"
    console.print(f"[bold green]{verb}[/] {escape(st.model)} ({escape(st.format)}, "
                  f"{escape(st.precision)}, {human_bytes(st.size)}) to "
                  f"{escape(result.store)}", highlight=False)
    source = "" if result.identity_source == "manifest" else \
        " (fallback: the manifest has no export.identity, so `zoo fetch` will not find it)"
    console.print(f"  identity   {result.identity}{escape(source)}", highlight=False)
    console.print(f"  record     {escape(result.record_key)}", highlight=False)
    console.print(f"  objects    {len(st.objects)}: {len(result.uploaded)} uploaded "
                  f"({human_bytes(result.bytes_uploaded)}), {len(result.present)} already "
                  "there", highlight=False)
    signer = result.signer or "[yellow]unsigned[/] (use --sign KEY)"
    console.print(f"  signed by  {signer}", highlight=False)
    if weights is not None:
        state = weights.get("skipped") or ("uploaded" if weights["uploaded"] else
                                           "already there")
        console.print(f"  weights    {weights['sha256'][:16]}… {escape(state)}", highlight=False)
    if st.untrained:
        console.print("  [bold yellow]UNTRAINED[/]: exported with --weights none",
                      highlight=False)


def cmd_revoke(args: argparse.Namespace) -> int:
    from zoo.cli.output import print_json
    from zoo.store.errors import StoreConfigError

    config = _config(args)
    if config.sign_key is None:
        raise StoreConfigError("zoo store revoke needs --sign KEY: a tombstone is only "
                               "honoured when it is signed")
    tomb = config.open().revoke(args.record, config.sign_key, args.reason)
    if args.json:
        print_json({"store": config.url, "revocation": tomb.key, "identity": tomb.identity,
                    "record": tomb.record, "revoked_at": tomb.revoked_at,
                    "reason": tomb.reason,
                    "signed_by": config.sign_key.public.fingerprint})
        return 0
    print(f"revoked record {tomb.record[:16]}… ({tomb.identity[:16]}…) in {config.url}: "
          f"{tomb.key}, signed by {config.sign_key.public.short}")
    return 0


def _signer(item: Any) -> str:
    sig = item.record.signature
    if sig is None:
        return "unsigned"
    label = {"trusted": " (trusted)", "untrusted": " (NOT trusted)",
             "invalid": " (INVALID)"}.get(item.signature or "", "")
    return sig.public_key.short + label


def _row(item: Any) -> dict[str, Any]:
    st = item.record.statement
    sig = item.record.signature
    return {"model": st.model, "format": st.format, "precision": st.precision,
            "size": st.size, "untrained": st.untrained, "artifact": st.artifact,
            "signed_by": sig.public_key.fingerprint if sig else None,
            "signature": item.signature, "published_at": st.published_at,
            "publisher": st.publisher, "identity": st.identity,
            "identity_source": st.identity_source, "record": item.key,
            "revoked": item.revoked}


def _print_table(items: list[Any]) -> None:
    """The listing laid out as rich's box-less table lays it out (a space of padding on each
    side of a cell, the header bold), line by line: rich's own layout took ~5 s for 10,000
    rows. Every line passes :func:`zoo.cli.output.shown`."""
    import os

    from zoo.cli.output import human_bytes, shown

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    rows: list[tuple[str, ...]] = [("model", "format", "precision", "size", "signed by",
                                    "published", "identity")]
    notes = [("", "")]
    for item in items:
        st = item.record.statement
        notes.append((" (untrained)" if st.untrained else "", " REVOKED" if item.revoked
                      else ""))
        rows.append((st.model + "".join(notes[-1]), st.format, st.precision,
                     human_bytes(st.size), _signer(item),
                     st.published_at[:19].replace("T", " ") + "Z", st.identity[:16]))
    cells = [[shown(c) for c in row] for row in rows]  # what the terminal gets: measured
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [" " + "  ".join(paint(c.ljust(w), "1") for c, w in zip(cells[0], widths,
                                                                  strict=True)) + " "]
    for row, (untrained, revoked) in zip(cells[1:], notes[1:], strict=True):
        first = row[0].ljust(widths[0])
        if color and (untrained or revoked):  # the notes are plain ASCII, shown() keeps them
            model = row[0][:len(row[0]) - len(untrained) - len(revoked)]
            first = model + paint(untrained, "33") * bool(untrained) + \
                paint(revoked, "1;31") * bool(revoked) + " " * (widths[0] - len(row[0]))
        lines.append(" " + "  ".join([first, *(c.ljust(w) for c, w in zip(
            row[1:], widths[1:], strict=True))]) + " ")
    sys.stdout.write("\n".join(lines) + "\n")


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.cli.output import error_line, print_json

    config = _config(args)
    store = config.open()
    good: list[Any] = []
    bad: list[Any] = []
    for item in store.records(args.pattern, config.trusted_keys or None, full=args.full):
        (good if item.record is not None else bad).append(item)
    good.sort(key=lambda i: (i.record.statement.published_at, i.key), reverse=True)
    if args.limit is not None:
        good = good[: args.limit]
    if args.json:
        print_json({"store": store.url, "listing": store.listing.as_dict()
                    if store.listing else None, "records": [_row(i) for i in good],
                    "unreadable": [{"record": i.key, "error": i.error} for i in bad]})
        return 0
    if not good and not bad:
        error_line(f"zoo: the store {store.url} holds no records"
                   + (f" for models matching {args.pattern!r}" if args.pattern else ""))
        return 0
    _print_table(good)
    for item in bad:
        error_line(f"zoo: warning: {item.key}: {item.error}")
    info = store.listing
    if info is not None and info.source == "index":
        error_line(f"zoo: listed through the store's index of {info.taken_at[:19]}Z "
                   f"({info.indexed} records, {info.journal} published since); a record "
                   "deleted after it still shows until the next `zoo store index` "
                   "(--full lists records/ key by key)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from zoo.cli.output import print_json, shown

    config = _config(args)
    result = config.open().index(config.sign_key)
    if args.json:
        print_json(result.as_dict())
        return 0
    snap = result.snapshot
    signer = snap.signature.public_key.short if snap.signature else "unsigned (use --sign KEY)"
    print(f"indexed {snap.records} records of {config.url} in {len(snap.parts)} parts "
          f"({result.parts_written} written): {result.key}, {signer}")
    for item in result.skipped:
        print(shown(f"  left out {item['record']}: {item['error']}"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from zoo.cli.output import human_bytes, print_json, stdout_console

    config = _config(args)
    report = config.open().verify(config.trusted_keys or None, progress=_progress(args))
    if args.json:
        print_json(report.as_dict())
        return 0 if report.ok else 1
    console = stdout_console()
    for entry in report.records:
        mark = "[green]ok[/]  " if not entry["problems"] else "[red]FAIL[/]"
        what = (f"{entry.get('model', '?')} {entry.get('format', '')} "
                f"{entry.get('precision', '')}").strip()
        console.print(f"{mark} {escape(what)}  {escape(entry['record'])}", highlight=False)
        if entry.get("revoked"):
            console.print(f"       REVOKED: {escape(entry['revoked'])}", highlight=False)
        for problem in entry["problems"]:
            console.print(f"       {escape(problem)}", highlight=False)
    for item in report.weights:
        if item["problem"]:
            console.print(f"[red]FAIL[/] {escape(item['key'])}: {escape(item['problem'])}",
                          highlight=False)
    for key in report.stray:
        console.print(f"[red]FAIL[/] {escape(key)}: not part of the store layout",
                      highlight=False)
    for item in report.index:
        console.print(f"[red]FAIL[/] {escape(item['key'])}: {escape(item['problem'])}",
                      highlight=False)
    if report.leftovers:
        console.print(f"{len(report.leftovers)} temporary files under tmp/ (left by "
                      "interrupted publishes)", highlight=False)
    bad = sum(1 for e in report.records if e["problems"]) + \
        sum(1 for w in report.weights if w["problem"]) + len(report.index)
    console.print(
        f"{len(report.records)} records, {len(report.weights)} weights files, "
        f"{report.objects_checked} objects re-hashed "
        f"({human_bytes(report.bytes_hashed)}), {bad} with problems; "
        f"{len(report.unreferenced)} objects no record names (left by interrupted "
        "publishes; nothing was deleted)", highlight=False)
    verdict = "[bold green]STORE OK[/]" if report.ok else "[bold red]STORE HAS PROBLEMS[/]"
    console.print(verdict)
    return 0 if report.ok else 1
