"""Cards from data: one card, a registry file's bytes, a plugin's items; errors name the line.

A user's registry file is strict: its first invalid card is an error naming the file, the
line, the model and the field. A plugin's sources are read card by card: a card that fails
validation is returned as :class:`~zoo.catalog.compiled.Broken` (name and reason) beside the
valid ones, so one bad card disables only itself. Field errors in YAML name the line of the
field: a mapping's key, a list item, or the list itself when an item is missing
(:class:`~zoo.catalog.yamlio.Locator`, composed only when an error needs it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._core.names import MAX_NAME, printable
from zoo.catalog.compiled import Broken, Parsed
from zoo.errors import CardError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from zoo.catalog.schema import ModelCard
    from zoo.catalog.yamlio import Locator

MAX_ERRORS = 10  # validation errors shown for one card
#: where a card's field is: its path inside the card -> a line, or None
LineOf = Callable[[Sequence[Any]], int | None]


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loc_part(part: Any) -> str:
    """One step of a field path: a plain name as it is, anything odd (a key holding spaces,
    newlines or control characters) quoted, so the error stays one readable line."""
    text = str(part)[:80]
    return text if text.isidentifier() or text.isdigit() else repr(text)


def _format_validation(exc: ValidationError, line_of: LineOf | None) -> tuple[int | None, str]:
    """(the line of the first error, every error as ``field a.b: message``); a later error on
    another line says its line."""
    errors = exc.errors()
    first: int | None = None
    parts: list[str] = []
    said: set[tuple[Any, ...]] = set()
    for err in errors[:MAX_ERRORS]:
        path, msg = _explained(err)
        if (path, msg) in said:  # a list two items short: said once
            continue
        said.add((path, msg))
        loc = ".".join(_loc_part(p) for p in path)
        line = line_of(path) if line_of is not None else None
        at = ""
        if first is None:
            first = line
        elif line is not None and line != first:
            at = f" (line {line})"
        # card-wide rules (palette vs labels vs classes) name their fields in the message
        parts.append(f"field {loc}{at}: {msg}" if loc else f"{msg}{at}")
    if len(errors) > MAX_ERRORS:
        parts.append(f"and {len(errors) - MAX_ERRORS} more")
    return first, "; ".join(parts)


def _explained(err: Any) -> tuple[tuple[Any, ...], str]:
    """An error's field path and message; a list that is too short is named itself ("too
    few items"), not by the item it lacks ("mean.2: Field required")."""
    loc, msg = tuple(err["loc"]), err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    if err.get("type") == "missing" and loc and type(loc[-1]) is int and isinstance(given, list):
        return loc[:-1], f"too few items (got {len(given)})"
    return loc, msg


def card_label(data: Any) -> str:
    """How an error names a card: its name, quoted, or what stands in for it."""
    name = data.get("name", "<no name>") if isinstance(data, dict) else "<no name>"
    return short(name) if isinstance(name, str) else f"<{type(name).__name__} name>"


def parse_card(data: Any, where: str, line_of: LineOf | None = None) -> ModelCard:
    """Validate one card; errors name ``where`` (file or plugin), the line (when ``line_of``
    finds the field in the YAML text), the model and the field."""
    from pydantic import ValidationError

    from zoo.catalog.schema import ModelCard

    if isinstance(data, ModelCard):
        return data
    if not isinstance(data, dict):
        line = line_of(()) if line_of is not None else None
        at = f"{where}:{line}" if line else where
        raise CardError(f"{at}: each model must be a mapping, got {type(data).__name__}")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        line, detail = _format_validation(exc, line_of)
        at = f"{where}:{line}" if line else where
        raise CardError(printable(f"{at}: model {card_label(data)}: {detail}")) from exc


def _usable_name(data: Any) -> str | None:
    """A broken card's name, if it has one a user could type (to ask ``zoo info`` why)."""
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and 0 < len(name) <= MAX_NAME else None


def parse_each(items: Sequence[Any], where: str,
               line_of: Callable[[int], LineOf] | None = None) -> Parsed:
    """Every item validated on its own: (valid cards, broken ones with their reasons)."""
    cards: list[ModelCard] = []
    broken: list[Broken] = []
    for index, item in enumerate(items):
        try:
            cards.append(parse_card(item, where, line_of(index) if line_of else None))
        except CardError as exc:
            broken.append(Broken(_usable_name(item), str(exc)))
    return cards, broken


def _models(data: bytes, path: Path) -> tuple[list[Any], Locator]:
    """The ``models:`` list of a registry file's bytes, and a locator for its lines."""
    from zoo.catalog.yamlio import Locator, decode_utf8, parse_yaml

    text = decode_utf8(data, path)
    doc = parse_yaml(text, path)
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CardError(f"{path}: expected a mapping with a 'models:' list of model cards")
    unknown = set(doc) - {"version", "models"}
    if unknown:
        shown = ", ".join(sorted(short(k, 40) for k in unknown)[:MAX_ERRORS])
        raise CardError(printable(f"{path}: unknown top-level keys [{shown}]; use 'models:'"))
    return doc["models"], Locator(text)


def _in_models(locator: Locator, index: int) -> LineOf:
    return lambda loc: locator.line(("models", index, *loc))


def parse_registry_bytes(data: bytes, path: Path) -> list[ModelCard]:
    """Validate every card of a registry file's bytes (``models:`` list); the first error
    names the file and the line; for cards, the model and the field too."""
    items, locator = _models(data, path)
    cards = []
    for i, item in enumerate(items):
        cards.append(parse_card(item, str(path), _in_models(locator, i)))
        items[i] = None  # the raw data can go: a large catalogue is held once, not twice
    return cards


def parse_plugin_file(data: bytes, path: Path) -> Parsed:
    """A plugin's registry file, card by card: a file that cannot be read as a ``models:``
    list is an error (the plugin's packaging is broken); a card that fails validation is
    returned as broken, naming the file, the line, the model and the field."""
    items, locator = _models(data, path)
    return parse_each(items, str(path), lambda i: _in_models(locator, i))


def lines_of_model(path: Path, name: str) -> list[int]:
    """The lines of the cards called ``name`` in registry file ``path`` (an error path: the
    file is read and composed again); empty when the file cannot be read."""
    from zoo.catalog.yamlio import Locator

    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return Locator(text).lines_where(("models",), "name", name)


def read_registry_file(path: Path) -> list[ModelCard]:
    """Load and validate every card in a registry YAML file (``models:`` list)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc
    return parse_registry_bytes(data, Path(path))
