"""Render a model card for humans (``zoo info``).

Every value that comes from a card or a plugin is a rich ``Text`` built by
:func:`zoo.cli.catalog.safe_text`: shown as written, never parsed as markup, with control
characters escaped. Markup appears only in zoo's own fixed strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from zoo.catalog.schema import ModelCard
from zoo.cli.catalog import safe_text
from zoo.cli.output import human_bytes, human_count

if TYPE_CHECKING:
    from zoo.export.support import FormatSupport


def _facts(card: ModelCard, source: str, problem: str | None) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    with_aux = card.num_params_with_aux
    aux = f" ({human_count(with_aux)} with aux head)" if with_aux else ""
    pre = card.preprocessing
    size = f"{pre.input_size[0]}x{pre.input_size[1]} (HxW)"
    resize = {"none": "none", "exact": f"exact to {size}",
              "shorter_side": f"shorter side to {pre.resize_size}"}[pre.resize]
    out = card.output
    reads = f"dict, read '{out.key}'" if out.kind == "dict" else "bare tensor"
    if out.optional_keys:
        reads += f" (optional: {', '.join(out.optional_keys)})"
    plugin = Text.assemble(safe_text(card.plugin or "-"), "  ",
                           safe_text(f"from {source}", "dim"))
    rows: list[tuple[Text, Text]] = [
        (safe_text(key), value if isinstance(value, Text) else safe_text(value))
        for key, value in (
            ("family", card.family),
            ("task", card.task),
            ("plugin", plugin),
            ("licence", card.license),
            ("params", f"{card.num_params:,}{aux}"),
            ("gflops", f"{card.gflops}" if card.gflops else "-"),
            ("input", f"{pre.layout} {pre.dtype} {pre.color_order}, default {size}"),
            ("scale", f"pixel / {pre.scale_divisor:g}"),
            ("mean / std", f"{list(pre.mean)} / {list(pre.std)}"),
            ("resize",
             f"{resize}, {pre.interpolation}{', antialias' if pre.antialias else ''}"),
            ("output", f"{reads}: [N, {out.channels}, H, W] {out.semantics}, argmax over C"),
        )
    ]
    builder = safe_text(f"unavailable: {problem}", "red") if problem else \
        safe_text(card.architecture)
    rows.insert(3, (safe_text("builder"), builder))
    rows += [(safe_text(link.title), safe_text(link.url)) for link in card.links]
    for key, value in rows:
        t.add_row(key, value)
    return t


def _weights(card: ModelCard) -> Table | Text:
    if not card.weights:
        return Text("no published weights: use --weights PATH|URL, or --weights none", "yellow")
    t = Table(box=None, header_style="bold", title="weights", title_justify="left")
    for col in ("name", "size", "sha256", "trained on", "metrics"):
        t.add_column(col, overflow="fold")
    for w in card.weights:
        name = safe_text(w.name)
        if w.name == card.default_weights:
            name.append(" (default)", "green")
        sha = w.sha256 or f"{w.sha256_prefix} (prefix)"
        size = human_bytes(w.size) + ("" if w.size_exact else " ~")
        metrics = ", ".join(f"{m.name} {m.value:g}" for m in w.metrics) or "-"
        t.add_row(name, safe_text(size), safe_text(sha), safe_text(w.trained_on),
                  safe_text(metrics))
    return t


def _labels(card: ModelCard) -> Table:
    t = Table(box=None, header_style="bold", title="labels", title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("label")
    t.add_column("default")
    for name in card.palettes:
        t.add_column(safe_text(name))
    for i, label in enumerate(card.labels):
        swatches = [card.palette[i], *(p[i] for p in card.palettes.values())]
        t.add_row(str(i), safe_text(label), *(_swatch(c) for c in swatches))
    return t


def _swatch(rgb: tuple[int, int, int]) -> Text:
    r, g, b = rgb
    return Text.assemble(("  ", f"on rgb({r},{g},{b})"), f" {r:3d},{g:3d},{b:3d}")


def _formats(card: ModelCard) -> Table:
    from zoo.export.support import support_matrix

    t = Table(box=None, header_style="bold", title="export formats", title_justify="left")
    for col in ("format", "file", "precisions", "status"):
        t.add_column(col, overflow="fold")
    for row in support_matrix(card):
        if row.note:
            status = safe_text(row.note, "red" if row.note.startswith("broken") else "")
        elif not row.installed:
            status = safe_text(f"needs {row.install or ''}", "yellow")
        else:
            status = Text("installed")
            if not row.runs_here:
                status.append("; ")
                status.append("verify can't run it here", "yellow")
                status.append_text(safe_text(f" ({row.runtime_note or ''})"))
        if row.deprecated:
            status.append("; ")
            status.append("deprecated", "yellow")
            status.append_text(safe_text(f": {row.deprecated}"))
        precisions = ", ".join(p + (" (default)" if p == row.default_precision and
                                    len(row.precisions) > 1 else "")
                               for p in row.precisions) or "-"
        t.add_row(safe_text(row.format), safe_text(_file_name(card.name, row)),
                  safe_text(precisions), status)
    return t


def _file_name(name: str, row: FormatSupport) -> str:
    """What ``zoo fetch --format F`` writes with the format's default precision."""
    precision = row.default_precision or "fp32"
    return f"{name}{'' if precision == 'fp32' else '.' + precision}{row.suffix}"


def render_card(card: ModelCard, source: str, problem: str | None = None) -> Panel:
    """The whole card as one rich panel; ``problem``: why its architecture has no builder."""
    body = Group(safe_text(card.description), Text(), _facts(card, source, problem), Text(),
                 _weights(card), Text(), _formats(card), Text(), _labels(card))
    return Panel(body, title=safe_text(card.name, "bold"), title_align="left")
