"""The app snippets of docs/apps.md, by format: the one source of the code an app copies.

docs/apps.md's platform table names, for each ``--format``, the sections that use it
(``[Kotlin](#android-kotlin-litert)``); each section's first code block is its snippet. The
site shows those blocks as text on every model page, so the page and the tested document never
disagree. Without the document (an installed wheel has no docs/), the page says where to look.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ROW = re.compile(r"^\|(?P<cells>.+)\|\s*$")
_FORMAT = re.compile(r"`([a-z0-9_]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(#([a-z0-9_\-]+)\)")
_HEADING = re.compile(r"^## (.+)$", re.M)
_BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


@dataclass(frozen=True)
class Snippet:
    """One section's code: the heading, the language and the code text."""

    heading: str
    anchor: str
    language: str
    code: str


def default_doc() -> Path:
    """docs/apps.md of the source tree zoo runs from."""
    return Path(__file__).resolve().parents[2] / "docs" / "apps.md"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^a-z0-9 _\-]", "", heading.strip().lower())
    return text.replace(" ", "-")


def parse(text: str) -> dict[str, list[Snippet]]:
    """format -> its snippets, in the order the table lists them."""
    sections: dict[str, tuple[str, str]] = {}
    headings = list(_HEADING.finditer(text))
    for i, match in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        sections[slug(match.group(1))] = (match.group(1).strip(), text[match.end():end])
    found: dict[str, list[Snippet]] = {}
    for line in text.splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        cells = [c.strip() for c in row.group("cells").split("|")]
        if len(cells) < 4:
            continue
        fmt = _FORMAT.search(cells[1])
        if fmt is None:
            continue
        for _title, anchor in _LINK.findall(cells[-1]):
            if anchor not in sections:
                continue
            heading, body = sections[anchor]
            block = _BLOCK.search(body)
            if block is not None:
                found.setdefault(fmt.group(1), []).append(
                    Snippet(heading, anchor, block.group(1) or "text", block.group(2)))
    return found


def load(path: Path | None = None) -> dict[str, list[Snippet]] | None:
    """The snippets of ``path`` (default: docs/apps.md), or None when it cannot be read."""
    try:
        text = (path or default_doc()).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return parse(text)
