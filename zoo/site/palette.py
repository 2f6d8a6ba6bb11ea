"""Palette swatches: contrast-checked label text, and paging for large label sets.

A swatch shows a class's label on its own colour; the text is black or white, whichever has
the higher WCAG 2 contrast ratio against the colour (one of them always reaches 4.5:1, the
level for normal text). A card may have up to 10,000 classes: its swatches are split into
pages of :data:`PAGE_SIZE`, so no page grows with the label count.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from zoo.site.html import esc, tag

PAGE_SIZE = 256
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)


def _channel(value: int) -> float:
    c = value / 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb: Sequence[int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""
    r, g, b = (_channel(int(v)) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG 2 contrast ratio of two colours (1..21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background: Sequence[int]) -> tuple[int, int, int]:
    """Black or white: whichever reads better on ``background``."""
    return BLACK if contrast(background, BLACK) >= contrast(background, WHITE) else WHITE


def hex_colour(rgb: Sequence[int]) -> str:
    """``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


@functools.lru_cache(maxsize=1 << 16)
def _swatch_attrs(rgb: tuple[int, int, int]) -> str:
    fg = text_colour(rgb)
    ratio = contrast(rgb, fg)
    title = f"{hex_colour(rgb)} rgb({rgb[0]}, {rgb[1]}, {rgb[2]}); text contrast {ratio:.1f}:1"
    return (f' class="swatch" title="{title}" style="background:{hex_colour(rgb)};'
            f'color:{hex_colour(fg)}" data-contrast="{ratio:.2f}"')


def swatch(rgb: Sequence[int], label: str) -> str:
    """One swatch: ``label`` (escaped) on ``rgb`` in the better-contrast text colour, with
    the colour's values and the contrast ratio in its title (palettes repeat across cards:
    each colour is worked out once)."""
    r, g, b = (int(v) for v in rgb)
    return f"<span{_swatch_attrs((r, g, b))}>{esc(label)}</span>"


def page_count(classes: int) -> int:
    """How many swatch pages ``classes`` labels take."""
    return max(1, -(-classes // PAGE_SIZE))


def page_name(model: str, number: int) -> str:
    """The file of swatch page ``number`` (1-based; page 1 is the model page itself)."""
    return f"{model}.html" if number == 1 else f"{model}.labels-{number}.html"


def labels_table(labels: Sequence[str], palettes: Mapping[str, Sequence[Sequence[int]]],
                 number: int) -> str:
    """The rows of swatch page ``number``: index, label, one swatch per palette."""
    start = (number - 1) * PAGE_SIZE
    stop = min(len(labels), start + PAGE_SIZE)
    head = "".join(tag("th", esc(name), scope="col") for name in palettes)
    rows = []
    for i in range(start, stop):
        cells = "".join(tag("td", swatch(colours[i], labels[i])) for colours in palettes.values())
        rows.append(f'<tr><td class="num">{i}</td><td>{esc(labels[i])}</td>{cells}</tr>\n')
    return (f'<table class="labels"><thead><tr><th scope="col" class="num">#</th>'
            f'<th scope="col">label</th>{head}</tr></thead>\n<tbody>\n{"".join(rows)}'
            "</tbody></table>\n")


def pager(model: str, number: int, pages: int) -> str:
    """Links to every swatch page (nothing when there is one page)."""
    if pages <= 1:
        return ""
    links = []
    for n in range(1, pages + 1):
        first = (n - 1) * PAGE_SIZE
        text = f"{first}\u2013{first + PAGE_SIZE - 1}"
        href = page_name(model, n) + ("#labels" if n == 1 else "")
        links.append(tag("span", esc(text), class_="current") if n == number
                     else tag("a", esc(text), href=href))
    return tag("nav", " ".join(links), class_="pager", aria_label="label pages")
