"""The index page: every card in one table, with search and filters (static/index.js).

Each row carries its facts in ``data-*`` attributes (escaped); the labels, which can be many,
go to ``search.js`` (a JavaScript data file, loaded by a classic script: pages work from a
folder, where browsers refuse fetch()). Without JavaScript the page is the full table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zoo.site.html import attrs, count, esc, js_data, page, size, tag


@dataclass(frozen=True)
class Entry:
    """What the index knows of one card."""

    name: str
    family: str
    description: str
    classes: int
    params: int
    weights_size: int | None
    license: str
    formats: tuple[str, ...]  # formats the card exports to
    labels: tuple[str, ...]
    demo: bool = False


def _row(e: Entry) -> str:
    cells = [
        tag("a", esc(e.name), href=f"models/{e.name}.html")
        + (" " + tag("a", "demo", href=f"demo/{e.name}.html", class_="badge") if e.demo else ""),
        esc(e.family), esc(e.classes), esc(count(e.params)), esc(size(e.weights_size)),
        esc(e.license), esc(" ".join(e.formats) or "-"),
    ]
    numeric = {2, 3, 4}
    tds = "".join(tag("td", c, class_="num" if i in numeric else None)
                  for i, c in enumerate(cells))
    data = attrs(data_name=e.name, data_family=e.family, data_classes=e.classes,
                 data_params=e.params, data_weights=e.weights_size if e.weights_size else 0,
                 data_license=e.license, data_formats=" ".join(e.formats))
    return f"<tr{data}>{tds}</tr>\n"


def _options(values: Sequence[str]) -> str:
    return "".join(tag("option", esc(v), value=v) for v in values)


def index_page(entries: Sequence[Entry], formats: Sequence[str], *, store_note: str = "",
               footer: str = "") -> str:
    """index.html."""
    licenses = sorted({e.license for e in entries})
    controls = (
        '<form class="filters" id="filters" role="search">\n'
        '<label>search <input type="search" id="q" placeholder="name, family or label" '
        'autocomplete="off"></label>\n'
        f'<label>format <select id="format"><option value="">any</option>'
        f"{_options(formats)}</select></label>\n"
        '<label>classes <span class="pair"><input type="number" id="classes-min" min="1" '
        'placeholder="min" aria-label="classes at least"><input type="number" '
        'id="classes-max" min="1" placeholder="max" aria-label="classes at most"></span>'
        "</label>\n"
        '<label>params up to (M) <input type="number" id="params-max" min="0" step="any">'
        "</label>\n"
        '<label>weights up to (MiB) <input type="number" id="weights-max" min="0" step="any">'
        "</label>\n"
        f'<label>licence <select id="license"><option value="">any</option>'
        f"{_options(licenses)}</select></label>\n"
        "</form>\n")
    head = "".join(tag("th", esc(h), scope="col", class_="num" if i in (2, 3, 4) else None)
                   for i, h in enumerate(["model", "family", "classes", "params", "weights",
                                          "licence", "formats"]))
    rows = "".join(_row(e) for e in entries)
    body = (
        "<h1>zoo models</h1>\n"
        f'<p class="lead">{len(entries)} semantic-segmentation models. Every number on these '
        "pages was measured by zoo; every page works offline from this folder.</p>\n"
        f"{store_note}{controls}"
        f'<p id="count" aria-live="polite">{len(entries)} of {len(entries)} models</p>\n'
        f'<table id="models" class="models"><thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{rows}</tbody></table>\n"
        '<p id="none" class="dim" hidden>No model matches.</p>\n'
        f"{footer}")
    return page("zoo models", body, scripts=["search.js", "index.js"],
                description="zoo model catalogue")


def search_data(entries: Sequence[Entry]) -> str:
    """search.js: each model's labels, newline-joined, for the search box."""
    labels = {e.name: "\n".join(e.labels) for e in entries}
    return f"window.ZOO_LABELS = {js_data(labels)};\n"
