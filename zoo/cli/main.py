"""Entry point of the ``zoo`` command: argument parsing, dispatch, and error-to-exit-code mapping.

Exit codes: 0 success; 1 runtime failure (download, export, verification, plugin); 2 usage or
bad input (unknown model, bad option, invalid card). Errors are one line on stderr; a
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cli.output import error_line
from zoo.errors import ZooError

if TYPE_CHECKING:  # imported for real only when a command needs it
    from zoo.catalog.registry import Registry

EPILOG = f"""\
examples:
  zoo list                          every registered model
  zoo list 'deeplab*' --json        a glob, as JSON
  zoo info deeplabv3_resnet50       the whole card: preprocessing, output, labels, palette
  zoo plugins                       installed plugins and whether they loaded
  zoo schema [card|manifest]        JSON Schema of a model card or an artifact manifest
  zoo fetch deeplabv3_resnet50      download and verify the weights (prints the cached path)
  zoo fetch deeplabv3_resnet50 --format lite -o models
                                    export: artifact + manifest + operators + SHA256SUMS
  zoo verify models/deeplabv3_resnet50.ptl
                                    checksums + golden parity in a clean runtime process
  zoo run deeplabv3_resnet50 photo.jpg --artifact models/deeplabv3_resnet50.ptl
                                    label, colour and overlay PNGs + classes present
  zoo bench lraspp_mobilenet_v3_large --size 520
                                    size, latency vs eager, SQNR per format -> NAME.bench.json
  zoo site -o site --bench NAME.bench.json   a static, offline catalogue site (index.html)

environment:
  ZOO_HOME       cache root (default: the platform's user cache folder)
  ZOO_REGISTRY   extra registry YAML files, separated by '{os.pathsep}'
  ZOO_MIRROR     download from this base URL instead (keeps each URL's path)
  ZOO_OFFLINE    1/true/yes/on: cache only; 0/false/no/off/empty: online (else exit 2)
  ZOO_CACHE_MAX  size budget of the export cache, e.g. 20G; least recently used exports
                 are evicted after each export (`zoo cache prune` applies it on demand)
  ZOO_MAX_IMAGE_PIXELS, ZOO_MAX_IMAGE_ASPECT
                 bounds on images `zoo run` decodes (checked from the header first)
  ZOO_STORE      team store URL: s3://bucket/prefix, file:///shared/zoo, any fsspec URL
  ZOO_TRUSTED_KEYS  Ed25519 public keys (PEM) whose signatures are trusted, separated by
                 '{os.pathsep}'
  ZOO_KEY_PASSPHRASE  passphrase of an encrypted --sign key
"""


class _Parser(argparse.ArgumentParser):
    """argparse with zoo's one-line error style (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        error_line(f"zoo: error: {message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def _common(dest: str = "registry") -> argparse.ArgumentParser:
    # The top-level parser and the sub-parsers keep --registry under different dests:
    # argparse copies a sub-parser's namespace over the parent's, so one shared dest would
    # drop `zoo --registry A list --registry B`'s A.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", action="append", type=Path, metavar="PATH", default=argparse.SUPPRESS,
        dest=dest, help="merge an extra registry YAML file (repeatable)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="show full tracebacks on errors",
    )
    return common


#: commands defined in this module; the others live in their own modules (_EXTRA_MODULES)
_CORE_COMMANDS = frozenset({"list", "info", "plugins", "schema"})
_EXTRA_MODULES = ("zoo.cli.fetch", "zoo.cli.cache", "zoo.cli.verify", "zoo.cli.run",
                  "zoo.cli.store", "zoo.cli.sync", "zoo.cli.bench", "zoo.cli.site")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``zoo`` argument parser: every command, or, when ``argv`` (the arguments it will
    parse) names one of this module's commands, only those (importing the other command
    modules is most of a ``zoo list``'s start-up)."""
    core_only = argv is not None and _command_in(argv) in _CORE_COMMANDS
    common = _common()
    parser = _Parser(
        prog="zoo",
        description="A registry of semantic-segmentation models that exports verified "
        "mobile/edge artifacts with everything an app needs to use them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(dest="top_registry")],
    )
    parser.add_argument("--version", action="version", version=f"zoo {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", parents=[common], help="list registered models",
                       description="List registered models as a table (or JSON).")
    p.add_argument("pattern", nargs="?", help="glob on model names, e.g. 'fcn_*'")
    p.add_argument("--format", metavar="F", help="only models known to export to format F")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_with_registry("list"))

    p = sub.add_parser("info", parents=[common], help="show a model's card",
                       description="Show everything known about one model: weights, "
                       "preprocessing, output contract, labels and palettes.")
    p.add_argument("name", help="model name (see `zoo list`)")
    p.add_argument("--json", action="store_true", help="the validated card as JSON")
    p.set_defaults(handler=_with_registry("info"))

    p = sub.add_parser("plugins", parents=[common], help="show installed plugins",
                       description="Plugins found in the 'zoo' entry-point group, whether they "
                       "loaded, and why not.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_plugins)

    p = sub.add_parser("schema", parents=[common], help="print a JSON Schema",
                       description="Print the JSON Schema of a model card or an artifact "
                       "manifest, for validating them in other languages.")
    p.add_argument("which", nargs="?", choices=("card", "manifest", "plan"), default="card")
    p.set_defaults(handler=_schema)

    for register in [] if core_only else _extra_commands():
        register(sub, common)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (the first token that is not a top-level option)."""
    args = iter(argv)
    for token in args:
        if token == "--registry":
            next(args, None)  # its value
        elif not token.startswith("-"):
            return token
        elif token == "--":
            return next(args, None)
    return None


def _extra_commands() -> list[Callable[..., None]]:
    """Command groups that live in their own modules (each adds its sub-parsers)."""
    registrars: list[Callable[..., None]] = []
    for module in _EXTRA_MODULES:
        try:
            mod = __import__(module, fromlist=["add_parsers"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        registrars.append(mod.add_parsers)
    return registrars


def _version() -> str:
    from zoo import __version__

    return __version__


def load_registry(args: argparse.Namespace) -> Registry:
    """The registry for this invocation: default, or fresh with ``--registry`` files merged."""
    from zoo.catalog.registry import Registry, default_registry

    extra = [*getattr(args, "top_registry", []), *getattr(args, "registry", [])]
    return Registry(extra_files=extra) if extra else default_registry()


def _with_registry(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from zoo.cli import catalog

        handler = {"list": catalog.cmd_list, "info": catalog.cmd_info}[command]
        return handler(args, load_registry(args))

    return run


def _plugins(args: argparse.Namespace) -> int:
    from zoo.cli import catalog

    try:
        registry = load_registry(args)
    except ZooError as exc:  # still show plugins when the catalogue itself is broken
        error_line(f"zoo: warning: {exc}")
        registry = None
    return catalog.cmd_plugins(args, registry)


def _schema(args: argparse.Namespace) -> int:
    from zoo.cli import catalog

    return catalog.cmd_schema(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "debug", False)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a full disk or closed pipe behind stdout is reported here
        return code
    except ZooError as exc:
        if debug:
            raise
        error_line(f"zoo: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        error_line("zoo: interrupted")
        return 130
    except SystemExit as exc:  # zoo's handlers return their code: this is foreign code exiting
        if debug:
            import traceback

            traceback.print_exc()
        error_line(f"zoo: error: {_exit_origin(exc)} called sys.exit({exc.code!r}) during "
                   f"`zoo {args.command}`; a plugin must not exit zoo (see `zoo plugins`; "
                   "--debug shows where)")
        return 1
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except OSError as exc:
        if debug or exc.errno is None:  # no errno: not the OS's verdict, a bug somewhere
            if debug:
                raise
            return _internal_error(exc)
        error_line(f"zoo: error: {os_error_line(exc)}")
        return 1
    except MemoryError:
        if debug:
            raise
        error_line("zoo: error: out of memory; close other programs or use a smaller input "
                   "(--input-size, smaller images)")
        return 1
    except RecursionError as exc:
        if debug:
            raise
        return _internal_error(exc)
    except Exception as exc:
        if debug:
            raise
        return _internal_error(exc)


def _exit_origin(exc: BaseException) -> str:
    """The module whose code raised ``exc`` (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__") if tb is not None else None
    return f"module {name!r}" if name else "something"


def _internal_error(exc: BaseException) -> int:
    error_line(
        f"zoo: internal error: {type(exc).__name__}: {exc} "
        "(this is a bug; rerun with --debug for the traceback)"
    )
    return 1


#: errno -> what the user can do about it
_OS_ADVICE = {
    errno.ENOSPC: "free some space, or point ZOO_HOME / -o at a disk with room",
    errno.EDQUOT: "free some space within your quota, or point ZOO_HOME / -o elsewhere",
    errno.EROFS: "the file system is read-only; point ZOO_HOME / -o at a writable folder",
    errno.EACCES: "check its permissions, or point ZOO_HOME / -o at a folder you can write",
    errno.EPERM: "check its permissions, or point ZOO_HOME / -o at a folder you can write",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def os_error_line(exc: OSError) -> str:
    """An ``OSError`` from the operating system as one line naming the path(s) and what to
    do: ``cannot write /x/y: No space left on device (ENOSPC); free some space ...``."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or type(exc).__name__
    reason += f" ({code})" if code else ""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p not in (None, "")]
    advice = _OS_ADVICE.get(exc.errno or 0)
    if not paths and _writing_stdout(exc):
        _quiet_stdout()  # so the exit's final flush does not fail again
        return (f"cannot write to standard output: {reason}; check where the output is "
                "redirected (a full disk, /dev/full, a closed file)")
    where = f"{' -> '.join(paths)}: " if paths else ""
    return f"{where}{reason}" + (f"; {advice}" if advice else "")


def _writing_stdout(exc: BaseException) -> bool:
    """Whether ``exc`` came from writing zoo's output: its innermost frame is zoo's output
    helpers, rich's console (zoo's tables go to stdout), a plain ``print()`` or the final
    flush in :func:`main`."""
    import linecache

    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    where = Path(code.co_filename)
    line = linecache.getline(code.co_filename, tb.tb_lineno).strip()
    return (where.parts[-2:] in (("cli", "output.py"), ("rich", "console.py"))
            or ((line.startswith("print(") or "sys.stdout" in line) and "stderr" not in line)
            or (where.parts[-2:] == ("cli", "main.py") and code.co_name == "main"))


def _quiet_stdout() -> None:
    """After a closed pipe (``zoo list | head -1``): point stdout at /dev/null so the final
    flush at exit does not print Python's 'Exception ignored' noise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def run() -> None:
    """Console-script entry: ``main()``, then exit.

    After a command that loaded torch, interpreter teardown (finalising torch, torchvision and
    TorchScript objects) takes about a second; the work is done and every file is already in
    place atomically, so the process flushes its streams, runs the ``atexit`` handlers (they
    remove temporary folders: coremltools' converted packages, a read-only export cache's
    private folder; skipping them left one package per Core ML export in the temp folder) and
    leaves with ``os._exit``.
    """
    code = main()
    if "torch" in sys.modules:
        atexit._run_exitfuncs()  # first: what a handler writes is flushed too
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
