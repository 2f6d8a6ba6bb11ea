"""Build the whole site into a fresh folder, then swap it into place.

Everything that can be refused is checked before anything is written: the output folder (new,
empty, or a site zoo wrote before: it holds ``.zoo-site``), the bench files, the demo
artifacts and onnxruntime-web's files, the images. The site is written into a temporary
sibling folder and renamed over the old one, so a reader never sees half a site. The same
inputs give the same bytes: nothing depends on the clock, the order of a listing, or the
machine's paths.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._core.log import one_line
from zoo.errors import UsageError, ZooError
from zoo.site import index as index_mod
from zoo.site import model_page, palette
from zoo.site.html import esc, page, tag

if TYPE_CHECKING:
    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard
    from zoo.store.config import StoreConfig

MARKER = ".zoo-site"
STATIC = Path(__file__).with_name("static")


@dataclass
class SiteOptions:
    """What goes into the site besides the catalogue."""

    store: StoreConfig | None = None
    bench: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    #: ONNX artifacts (a Path), or model names whose ONNX export the export cache holds (a str
    #: naming a catalogue model and no existing file; any other str is a path)
    demo: list[Path | str] = field(default_factory=list)
    ort_wasm: Path | None = None
    overlays: bool = True  # golden-scene overlays for cards whose weights are cached
    apps_doc: Path | None = None  # docs/apps.md (default: the source tree's)


@dataclass
class SiteReport:
    """What a build wrote."""

    out: Path
    models: int = 0
    pages: int = 0
    files: int = 0
    bytes: int = 0
    overlays: list[str] = field(default_factory=list)  # models with overlays
    demos: list[str] = field(default_factory=list)
    bench_records: int = 0
    store_error: str | None = None
    store_artifacts: int = 0
    store_bench: int = 0  # bench records read from the team store and shown
    store_bench_refused: int = 0


def check_output(out: Path) -> None:
    """``out`` must be new, empty, or a site zoo built (it holds :data:`MARKER`)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"-o {out}: not a folder; name a new or empty folder for the site")
    if out.is_dir() and not (out / MARKER).is_file():
        try:
            empty = not any(out.iterdir())
        except OSError as exc:
            raise UsageError(f"-o {out}: cannot read it ({exc.strerror}); choose another "
                             "folder") from None
        if not empty:
            raise UsageError(f"-o {out}: the folder holds files zoo did not write (no "
                             f"{MARKER}); name a new or empty folder, zoo replaces only a site "
                             "it built")


def build_site(registry: Registry, out: Path, options: SiteOptions | None = None,
               say: Callable[[str], None] | None = None) -> SiteReport:
    """Write the site for every card of ``registry`` into ``out`` (replaced as a whole)."""
    from zoo import __version__
    from zoo.export import available_formats
    from zoo.export.support import support_matrix
    from zoo.site import benchdata, overlays, snippets

    options = options or SiteOptions()
    note = say or (lambda _m: None)
    out = Path(out).absolute()  # `-o .` names the folder by its name, not ''
    check_output(out)
    names = registry.names()
    files = benchdata.read_records(options.bench, set(names))
    demos: dict[str, Any] = {}
    ort = None
    if options.demo:
        from zoo.site import demo as demo_mod

        ort = demo_mod.find_ort(options.ort_wasm)
        for item in options.demo:
            artifact = demo_mod.demo_artifact(item, registry)
            if artifact.model not in names:
                raise UsageError(f"--demo {item} is an artifact of {artifact.model!r}, which is "
                                 "not in this catalogue; add its registry file with --registry")
            demos[artifact.model] = artifact  # the last one named wins
    elif options.ort_wasm is not None:
        raise UsageError("--ort-wasm goes with --demo ARTIFACT.onnx")
    images = overlays.load_images(options.images) if options.images else []
    cards = [registry.get(n) for n in names]
    store_view = None
    if options.store is not None:
        from zoo._core.redact import redact_url
        from zoo.site.store_view import read_store

        note(f"reading the team store {redact_url(options.store.url)}")
        store_view = read_store(options.store, names)
    bench = benchdata.groups(files, store_view.bench if store_view is not None else [])
    docs = snippets.load(options.apps_doc)
    shared_snippets = model_page.snippet_html(docs)

    stage = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
    except OSError as exc:
        raise _write_error(out, stage, exc) from exc
    report = SiteReport(out, models=len(cards), bench_records=sum(map(len, bench.values())))
    try:
        (stage / "models").mkdir()
        (stage / "img").mkdir()
        for name in ("style.css", "index.js"):
            shutil.copyfile(STATIC / name, stage / name)
        (stage / MARKER).write_text("a static site written by `zoo site`; zoo replaces this "
                                    "folder as a whole when it builds the site again\n",
                                    encoding="utf-8")
        entries = []
        for card in cards:
            support = support_matrix(card)
            ov = None
            if options.overlays:
                weights, why = overlays.cached_weights(card)
                if weights is not None:
                    note(f"rendering overlays of {card.name}")
                    try:
                        ov = overlays.render(card, weights, images, stage / "img", card.name,
                                             registry)
                        report.overlays.append(card.name)
                    except ZooError as exc:  # a builder gone, weights that do not load
                        ov = overlays.Overlays(reason=f"the model could not be built here: "
                                                      f"{one_line(str(exc))[:300]}")
                else:
                    ov = overlays.Overlays(reason=why)
            inputs = model_page.ModelInputs(
                source=registry.source(card.name), support=support,
                bench=bench.get(card.name, []), overlays=ov, store=store_view, snippets=docs,
                snippet_html=shared_snippets, demo=card.name in demos, zoo_version=__version__)
            _write(stage / "models" / f"{card.name}.html", model_page.model_page(card, inputs))
            for number in range(2, palette.page_count(card.num_classes) + 1):
                _write(stage / "models" / palette.page_name(card.name, number),
                       model_page.labels_page(card, number))
            entries.append(_entry(card, support, card.name in demos))
        footer = _footer(__version__, report, store_view is not None)
        store_note = ""
        if store_view is not None:
            from zoo.site.store_view import page_body, summary

            _write(stage / "store.html", page("team store \u2013 zoo", page_body(store_view)))
            store_note = summary(store_view).replace(
                "</p>", " " + tag("a", "What the store holds", href="store.html") + "</p>", 1)
            report.store_error = store_view.error
            report.store_artifacts = len(store_view.artifacts)
            report.store_bench = sum(1 for group in bench.values() for g in group if g.stored)
            report.store_bench_refused = len(store_view.bench_refused)
        _write(stage / "index.html", index_mod.index_page(
            entries, available_formats(registry.host), store_note=store_note, footer=footer))
        _write(stage / "search.js", index_mod.search_data(entries))
        if demos and ort is not None:
            from zoo.site import demo as demo_mod

            demo_mod.write_runtime(ort, stage / "ort")
            (stage / "demo").mkdir()
            for name in ("zoo-ops.js", "demo.js"):
                shutil.copyfile(STATIC / name, stage / name)
            for name in sorted(demos):
                note(f"writing the demo of {name}")
                demo_mod.write_demo(demos[name], stage / "demo")
                report.demos.append(name)
        if not any((stage / "img").iterdir()):
            (stage / "img").rmdir()
        _tally(stage, report)
        _swap(stage, out)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise _write_error(out, stage, exc) from exc
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


def _write_error(out: Path, stage: Path, exc: OSError) -> ZooError:
    """One line for a site that could not be built: writing it (the folder, what failed, the
    way out), or reading a file it copies (that file named). ``out`` is left as it was: the
    site is built beside it and swapped in whole."""
    what = (exc.strerror or type(exc).__name__).lower()
    failed = Path(exc.filename).absolute() if isinstance(exc.filename, str | Path) else None
    if failed is not None and failed not in (stage, out) and stage not in failed.parents \
            and failed not in out.parents:
        return ZooError(f"cannot read {failed} while building the site: {what}; {out} was "
                        "left as it was")
    if failed is not None and failed in out.parents and failed.is_file():
        what = f"{failed} is a file, not a folder"
    return ZooError(f"cannot write the site to {out}: {what}; {out} was left as it "
                    "was; choose another -o folder, or free some space if the disk is full")


def _entry(card: ModelCard, support: list[Any], demo: bool) -> index_mod.Entry:
    default = card.weights_named(card.default_weights) if card.default_weights else None
    return index_mod.Entry(
        name=card.name, family=card.family, description=card.description,
        classes=card.num_classes, params=card.num_params,
        weights_size=default.size if default else None, license=card.license,
        formats=tuple(row.format for row in support if row.precisions),
        labels=tuple(card.labels), demo=demo)


def _footer(version: str, report: SiteReport, store: bool) -> str:
    parts = [f"Built by zoo {version} from {report.models} model cards"]
    if report.bench_records:
        parts.append(f"{report.bench_records} bench records")
    if store:
        parts.append("the team store")
    return "<footer>" + esc(", ".join(parts) + ". Static files: no server, no network.") + \
        "</footer>\n"


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _tally(stage: Path, report: SiteReport) -> None:
    for root, _dirs, files in os.walk(stage):
        for name in files:
            report.files += 1
            report.bytes += (Path(root) / name).stat().st_size
            report.pages += name.endswith(".html")


def _swap(stage: Path, out: Path) -> None:
    """Put ``stage`` where ``out`` is: the old site (if any) is renamed away first, then
    removed, so ``out`` is always a whole site or briefly absent, never half-written."""
    old = None
    if out.is_dir():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out, old)
    try:
        os.rename(stage, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


