"""A page per model: description, preprocessing, output contract, weights, the formats
matrix, artifact sizes, bench plots, overlays, labels with palette swatches (paged), the app
snippets, and what the team store holds of it. Every card string is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zoo.site import benchdata, palette
from zoo.site.html import count, esc, page, size, table, tag

if TYPE_CHECKING:
    from zoo.catalog.schema import ModelCard
    from zoo.export.support import FormatSupport
    from zoo.site.overlays import Overlays
    from zoo.site.snippets import Snippet
    from zoo.site.store_view import StoreView


@dataclass
class ModelInputs:
    """Everything a model page shows besides the card."""

    source: str
    support: list[FormatSupport]
    bench: list[benchdata.BenchGroup] = field(default_factory=list)
    overlays: Overlays | None = None
    store: StoreView | None = None
    snippets: dict[str, list[Snippet]] | None = None
    snippet_html: dict[str, str] = field(default_factory=dict)  # format -> rendered, shared
    demo: bool = False
    zoo_version: str = ""


def _facts(card: ModelCard, source: str) -> str:
    pre = card.preprocessing
    out = card.output
    hw = f"{pre.input_size[0]}x{pre.input_size[1]} (HxW)"
    resize = {"none": "none (the image's own size)", "exact": f"exact to {hw}",
              "shorter_side": f"shorter side to {pre.resize_size}"}[pre.resize]
    reads = f"dict, read '{out.key}'" if out.kind == "dict" else "bare tensor"
    if out.optional_keys:
        reads += f" (optional: {', '.join(out.optional_keys)})"
    aux = f" ({card.num_params_with_aux:,} with aux head)" if card.num_params_with_aux else ""
    about = [
        ("family", card.family), ("task", card.task), ("licence", card.license),
        ("plugin", card.plugin or "-"), ("from", source),
        ("parameters", f"{card.num_params:,}{aux}"),
        ("GFLOPs", f"{card.gflops:g}" if card.gflops else "-"), ("classes", card.num_classes),
    ]
    preprocessing = [
        ("input", f"{pre.layout} {pre.dtype}, {pre.color_order}, default {hw}"),
        ("scale", f"pixel / {pre.scale_divisor:g}"),
        ("mean", ", ".join(f"{v:g}" for v in pre.mean)),
        ("std", ", ".join(f"{v:g}" for v in pre.std)),
        ("resize", f"{resize}, {pre.interpolation}{', antialias' if pre.antialias else ''}"),
    ]
    output = [
        ("kind", reads),
        ("shape", f"[N, {out.channels}, H, W]"),
        ("values", f"{out.semantics}; the class of a pixel is the argmax over C"),
    ]

    def dl(rows: Sequence[tuple[str, object]]) -> str:
        return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows) + \
            "</dl>\n"

    links = "".join(tag("li", tag("a", esc(link.title), href=link.url, rel="noopener")
                           + " " + tag("span", esc(link.url), class_="dim"))
                    for link in card.links)
    return (f'<section id="about"><h2>About</h2>{dl(about)}'
            + (f"<ul class=\"links\">{links}</ul>" if links else "") + "</section>\n"
            f'<section id="preprocessing"><h2>Preprocessing</h2>{dl(preprocessing)}</section>\n'
            f'<section id="output"><h2>Output contract</h2>{dl(output)}</section>\n')


def _weights(card: ModelCard) -> str:
    if not card.weights:
        return ('<section id="weights"><h2>Weights</h2><p>No published weights: '
                "<code>--weights PATH|URL</code> with your own.</p></section>\n")
    rows = []
    for w in card.weights:
        name = esc(w.name) + (" " + tag("span", "default", class_="badge")
                              if w.name == card.default_weights else "")
        metrics = ", ".join(f"{m.name} {m.value:g} ({m.dataset})" for m in w.metrics) or "-"
        sha = w.sha256 or f"{w.sha256_prefix} (prefix)"
        rows.append([name, esc(size(w.size) + ("" if w.size_exact else " (about)")),
                     tag("code", esc(sha)), esc(w.trained_on), esc(metrics)])
    return ('<section id="weights"><h2>Weights</h2>'
            + table(["name", "size", "sha256", "trained on", "metrics"], rows, numeric=[1])
            + "</section>\n")


def _formats(card: ModelCard, inputs: ModelInputs) -> str:
    sizes = benchdata.artifact_sizes(inputs.bench)
    stored = inputs.store.for_model(card.name) if inputs.store else []
    for a in sorted(stored, key=lambda a: a.published_at):
        sizes.setdefault((a.format, a.precision), a.size)
    rows = []
    for row in inputs.support:
        if row.note:
            status = row.note
        elif not row.installed:
            status = f"needs {row.install or 'its extra'}"
        else:
            status = "installed"
        runs = "yes" if row.runs_here and row.installed and not row.note else \
            ("no" + (f": {row.runtime_note}" if row.runtime_note else ""))
        known = [f"{p} {size(sizes[(row.format, p)])}" for p in row.precisions
                 if (row.format, p) in sizes]
        deprecated = f"deprecated: {row.deprecated}" if row.deprecated else ""
        rows.append([
            esc(row.format), tag("code", esc(_file_name(card.name, row))),
            esc(", ".join(row.precisions) or "-"), esc(status), esc(runs),
            esc(", ".join(known) or "-"), esc(deprecated)])
    note = "" if sizes else tag(
        "p", esc(f"No artifact sizes measured yet: `zoo bench {card.name}` writes a record; "
                 "pass it with --bench."), class_="dim")
    return ('<section id="formats"><h2>Formats</h2>'
            + table(["format", "file", "precisions", "export here", "runs here",
                     "artifact size", "note"], rows) + note + "</section>\n")


def _file_name(name: str, row: FormatSupport) -> str:
    precision = row.default_precision or "fp32"
    return f"{name}{'' if precision == 'fp32' else '.' + precision}{row.suffix}"


def _bench_store_notes(card: ModelCard, inputs: ModelInputs) -> str:
    """Why the team store's bench records of ``card`` are missing or refused (markup)."""
    view = inputs.store
    if view is None or view.error is not None:
        return ""
    from zoo.site.store_view import refused_list

    if view.bench_error is not None:
        return tag("p", esc(f"The team store's bench records could not be read: "
                            f"{view.bench_error}"), class_="warning store-error")
    return refused_list(view.bench_refused_for(card.name))


def _bench(card: ModelCard, inputs: ModelInputs) -> str:
    notes = _bench_store_notes(card, inputs)
    if not inputs.bench:
        return ('<section id="bench"><h2>Size, latency and fidelity</h2>'
                + tag("p", esc(f"No bench records: run `zoo bench {card.name}` and build the "
                               "site with --bench FILE (or publish it with --publish and "
                               "build with --store)."), class_="dim")
                + notes + "</section>\n")
    return ('<section id="bench"><h2>Size, latency and fidelity</h2>'
            "<p>Latency is the ratio to eager fp32 on the same machine, measured as "
            "interleaved pairs; below 1 is faster. Each group is one machine.</p>\n"
            + notes + benchdata.section(inputs.bench, inputs.zoo_version) + "</section>\n")


def _overlays(card: ModelCard, inputs: ModelInputs) -> str:
    ov = inputs.overlays
    head = '<section id="overlays"><h2>Overlays</h2>'
    if ov is None or not ov.pictures:
        why = ov.reason if ov is not None and ov.reason else "not rendered"
        return head + tag("p", esc(f"No overlay: {why}."), class_="dim") + "</section>\n"
    figures = []
    for pic in ov.pictures:
        present = ", ".join(f"{label} {100 * share:.1f} %" for _i, label, share in
                            pic.classes[:8])
        swatches = " ".join(palette.swatch(card.palette[i], label)
                            for i, label, _s in pic.classes[:8])
        figures.append(
            '<figure class="overlay">'
            + tag("img", src=f"../{pic.image}", alt=f"{pic.title}", loading="lazy")
            + tag("img", src=f"../{pic.overlay}", alt=f"{pic.title} with {card.name}'s labels: "
                  f"{present}", loading="lazy")
            + tag("figcaption", esc(pic.title) + ": " + swatches) + "</figure>\n")
    return (head + tag("p", esc(f"The eager model with weights {ov.weights}, "
                                "the card's preprocessing and default palette."), class_="dim")
            + "".join(figures) + "</section>\n")


def _labels(card: ModelCard, number: int) -> str:
    palettes = {"default": card.palette, **card.palettes}
    pages = palette.page_count(card.num_classes)
    return ('<section id="labels"><h2>Labels and palettes</h2>'
            + palette.pager(card.name, number, pages)
            + palette.labels_table(card.labels, palettes, number)
            + palette.pager(card.name, number, pages) + "</section>\n")


def snippet_html(snippets: dict[str, list[Snippet]] | None) -> dict[str, str]:
    """format -> its rendered snippets (rendered once per site, shared by every page)."""
    if snippets is None:
        return {}
    out = {}
    for fmt, items in snippets.items():
        out[fmt] = "".join(
            f"<details><summary>{esc(s.heading)}</summary>"
            f'<pre><code class="language-{esc(s.language)}">{esc(s.code)}</code></pre>'
            "</details>\n" for s in items)
    return out


def _apps(inputs: ModelInputs) -> str:
    head = '<section id="apps"><h2>In an app</h2>'
    if inputs.snippets is None:
        return head + tag("p", esc("The app snippets live in docs/apps.md of zoo's source "
                                   "(not found beside this installation)."),
                          class_="dim") + "</section>\n"
    parts = []
    for row in inputs.support:
        code = inputs.snippet_html.get(row.format)
        if row.precisions and code:
            parts.append(tag("h3", esc(row.format)) + code)
    return head + "<p>From docs/apps.md (tested against real manifests); read every fact " \
        "from the artifact's manifest.</p>\n" + "".join(parts) + "</section>\n"


def _store(card: ModelCard, inputs: ModelInputs) -> str:
    if inputs.store is None:
        return ""
    from zoo.site import store_view

    view = inputs.store
    head = '<section id="store"><h2>In the team store</h2>' + store_view.summary(view)
    if view.error is not None:
        return head + "</section>\n"
    mine = view.for_model(card.name)
    body = store_view.artifacts_table(mine, with_model=False) if mine else tag(
        "p", esc(f"The store holds no artifact of {card.name}."), class_="dim")
    return head + body + "</section>\n"


def model_page(card: ModelCard, inputs: ModelInputs) -> str:
    """models/NAME.html (page 1 of its labels)."""
    nav = [("about", "about"), ("formats", "formats"), ("bench", "bench"),
           ("overlays", "overlays"), ("labels", "labels"), ("apps", "apps")]
    if inputs.store is not None:
        nav.append(("store", "store"))
    links = " ".join(tag("a", esc(text), href=f"#{anchor}") for anchor, text in nav)
    demo = tag("p", tag("a", esc(f"Try {card.name} in your browser"),
                        href=f"../demo/{card.name}.html", class_="button")) if inputs.demo else ""
    body = (f"<h1>{esc(card.name)}</h1>\n"
            f'<p class="lead description">{esc(card.description)}</p>\n'
            f'<nav class="sections">{links}</nav>\n{demo}'
            + _facts(card, inputs.source) + _weights(card) + _formats(card, inputs)
            + _bench(card, inputs) + _overlays(card, inputs) + _labels(card, 1)
            + _apps(inputs) + _store(card, inputs))
    return page(f"{card.name} \u2013 zoo", body, root="../",
                description=f"{card.name}: {count(card.num_params)} parameters, "
                            f"{card.num_classes} classes")


def labels_page(card: ModelCard, number: int) -> str:
    """models/NAME.labels-N.html: swatch page N (N >= 2)."""
    body = (f"<h1>{esc(card.name)}: labels, page {number}</h1>\n"
            + tag("p", tag("a", esc(f"back to {card.name}"), href=f"{card.name}.html"))
            + _labels(card, number))
    return page(f"{card.name} labels {number} \u2013 zoo", body, root="../")
