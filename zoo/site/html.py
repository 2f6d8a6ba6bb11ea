"""HTML for the site: every outside string escaped, the page shell, number formats.

Markup is only ever zoo's own fixed strings. Anything from a card, a bench record, a store
record or a manifest goes through :func:`esc` (text and attribute values alike), so a card whose
description holds ``<script>`` shows those characters and runs nothing. Control characters are
replaced, so a page is always well-formed text.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

#: C0/C1 controls except tab and newline, and the non-characters HTML forbids
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")


def esc(value: object) -> str:
    """``value`` as HTML text or a quoted attribute value: ``& < > " '`` escaped, control
    characters replaced by U+FFFD."""
    text = value if isinstance(value, str) else str(value)
    return html.escape(_CONTROL.sub("\ufffd", text), quote=True)


def attrs(**values: object) -> str:
    """`` key="value"`` pairs (escaped; ``None``/``False`` left out, ``True`` bare); a
    trailing ``_`` is dropped (``class_``) and ``_`` becomes ``-`` (``data_name``)."""
    parts = []
    for key, value in values.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(parts)


def tag(name: str, body: str = "", **values: object) -> str:
    """``<name attrs>body</name>``; ``body`` is markup (escape text with :func:`esc`)."""
    return f"<{name}{attrs(**values)}>{body}</{name}>"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, caption: str | None = None,
          class_: str | None = None, numeric: Iterable[int] = ()) -> str:
    """A table; ``headers`` are plain text (escaped), cells are markup; ``numeric`` columns
    are right-aligned."""
    right = set(numeric)
    head = "".join(tag("th", esc(h), scope="col", class_="num" if i in right else None)
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(tag("td", cell, class_="num" if i in right else None)
                         for i, cell in enumerate(row)) + "</tr>\n"
        for row in rows)
    cap = tag("caption", esc(caption)) if caption else ""
    return f"<table{attrs(class_=class_)}>{cap}<thead><tr>{head}</tr></thead>\n" \
           f"<tbody>\n{body}</tbody></table>\n"


def js_data(value: Any) -> str:
    """``value`` as a JavaScript literal safe anywhere in a script (``<``, ``>``, ``&`` and
    the JavaScript line separators escaped): data, never code."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                       ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def page(title: str, body: str, *, root: str = "", scripts: Iterable[str] = (),
         description: str = "") -> str:
    """A whole HTML document: ``title`` is plain text, ``body`` markup, ``root`` the relative
    path back to the site's top folder (``""`` or ``"../"``), ``scripts`` site-relative
    classic scripts loaded at the end of the body. A Content-Security-Policy allows only files
    of the site itself (and data:/blob: for what the page makes itself; inline style
    attributes for swatch colours), so nothing leaves the folder even if a string slipped
    through."""
    csp = ("default-src 'self'; script-src 'self' blob: 'wasm-unsafe-eval'; "
           "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
           "connect-src 'self' blob: data:; "
           "object-src 'none'; base-uri 'none'; form-action 'none'")
    tail = "".join(f'<script src="{esc(root + s)}"></script>\n' for s in scripts)
    meta = f'<meta name="description" content="{esc(description)}">\n' if description else ""
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{meta}<title>{esc(title)}</title>\n"
        f'<link rel="stylesheet" href="{esc(root)}style.css">\n</head>\n<body>\n'
        f'<header class="top"><a href="{esc(root)}index.html">zoo models</a></header>\n'
        f"<main>\n{body}</main>\n{tail}</body>\n</html>\n"
    )


def count(n: int | None) -> str:
    """42004074 -> '42.0M'; 644 -> '644'; None -> '-' (zoo's one count printer)."""
    from zoo._core.settings import format_count

    return format_count(n)


def size(n: int | None) -> str:
    """Bytes as zoo prints them everywhere ('160.5 MiB'); None -> '-'."""
    if n is None:
        return "-"
    from zoo._core.settings import format_size

    return format_size(n)


def num(value: float | None, digits: int = 2) -> str:
    """A fixed-point number (same text for the same value on every run); None -> '-'."""
    return "-" if value is None else f"{value:.{digits}f}"
