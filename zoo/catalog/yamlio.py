"""Strict YAML reading: syntax errors and duplicate keys name the file and the line.

:class:`Locator` finds the line of a value (a mapping's key, a list item, the list itself)
from its path, so a card's field errors name the line too; it composes the node tree only
when an error needs a line.

Registry files are read by one of two loaders that give the same result:

- a fast one that builds plain data straight from libyaml's events. It covers what registry
  files are made of (plain and quoted scalars, block and flow collections) and gives up on
  anything else: tags, anchors and aliases, merge keys, timestamps, several documents,
  duplicate or unhashable keys, syntax errors;
- PyYAML's safe loader (with duplicate keys refused), which handles everything the fast one
  gives up on and writes every error message.

PyYAML builds a node tree and resolves every scalar through Python-level regular
expressions; for a 3 MB catalogue that is seconds, the event walk a fraction of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from zoo._core.names import printable
from zoo.errors import CardError

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
try:
    from yaml.cyaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml: the safe loader does it all
    _Parser = None


class _StrictLoader(_Loader):  # type: ignore[misc, valid-type]
    """A safe loader that refuses duplicate mapping keys instead of keeping the last one."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # a list or mapping as a key
            raise yaml.constructor.ConstructorError(
                None, None, "found unhashable key", key_node.start_mark
            ) from None
        if duplicate:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


# -- the fast path ---------------------------------------------------------------------------


class _GiveUp(Exception):
    """The fast loader met something it leaves to PyYAML's loader."""


_STR = "tag:yaml.org,2002:str"
_RESOLVERS: dict[Any, list[tuple[str, Any]]] = yaml.resolver.Resolver.yaml_implicit_resolvers
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_BOOLS = yaml.constructor.SafeConstructor.bool_values
_SIMPLE = {
    "tag:yaml.org,2002:int": _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
}


def _resolve(value: str) -> Any:
    """A plain scalar the way PyYAML's safe loader reads it."""
    candidates = [*_RESOLVERS.get(value[0] if value else "", []), *_RESOLVERS.get(None, [])]
    tag = next((t for t, regexp in candidates if regexp.match(value)), _STR)
    if tag == _STR:
        return value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return _BOOLS[value.lower()]
    construct = _SIMPLE.get(tag)
    if construct is None:  # timestamps, merge keys, '=': PyYAML's business
        raise _GiveUp
    return construct(yaml.ScalarNode(tag, value))


def _fast_load(text: str) -> Any:
    """Plain data from ``text`` for the common subset of YAML; raises :class:`_GiveUp` else."""
    events = yaml.events
    scalar_event, mapping_start, sequence_start = (
        events.ScalarEvent, events.MappingStartEvent, events.SequenceStartEvent)
    ends = (events.MappingEndEvent, events.SequenceEndEvent)
    skip = (events.StreamStartEvent, events.DocumentEndEvent)
    plain: dict[str, Any] = {}  # catalogues repeat their scalars: resolve each once
    parser = _Parser(text)
    try:
        stack: list[Any] = []  # open containers; a mapping's pending key sits above it
        root: Any = None
        documents = 0
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is scalar_event:
                if event.tag is not None or event.anchor is not None:
                    raise _GiveUp
                value = event.value
                if event.implicit[0]:  # plain: null, bool, int, float or str
                    try:
                        value = plain[value]
                    except KeyError:
                        resolved = plain[value] = _resolve(value)
                        value = resolved
            elif kind is mapping_start or kind is sequence_start:
                if event.anchor is not None or event.tag is not None:
                    raise _GiveUp
                stack.append({} if kind is mapping_start else [])
                continue
            elif kind in ends:
                value = stack.pop()
            elif kind in skip:
                continue
            elif kind is events.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _GiveUp
                continue
            elif kind is events.StreamEndEvent:
                return root
            else:  # aliases
                raise _GiveUp
            if not stack:
                root = value
                continue
            top = stack[-1]
            kind = type(top)
            if kind is list:
                top.append(value)
            elif kind is _Key:
                stack.pop()
                mapping = stack[-1]
                if top.key in mapping:
                    raise _GiveUp
                mapping[top.key] = value
            else:
                try:
                    hash(value)
                except TypeError:
                    raise _GiveUp from None
                stack.append(_Key(value))
    finally:
        parser.dispose()


class _Key:
    """A mapping key waiting for its value."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


# -- public ----------------------------------------------------------------------------------


def decode_utf8(data: bytes, where: Path | str) -> str:
    """``data`` as text; anything but UTF-8 is a :class:`CardError` naming ``where``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardError(
            f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def parse_yaml(text: str, where: Path | str) -> Any:
    """Parse ``text``; raise :class:`CardError` as ``WHERE:LINE:COL: problem`` on any error."""
    try:
        return _parse(text, where)
    except CardError as exc:
        raise CardError(printable(str(exc))) from exc.__cause__


def _parse(text: str, where: Path | str) -> Any:
    if _Parser is not None:
        try:
            return _fast_load(text)
        except (_GiveUp, yaml.YAMLError, ValueError, TypeError, OverflowError):
            pass  # the safe loader decides, and words the error
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else str(where)
        problem = exc.problem or exc.context or "invalid YAML"
        raise CardError(f"{at}: YAML syntax error: {problem}") from exc
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character or "?")
        raise CardError(
            f"{where}: YAML error: character #x{char:04x} at offset {exc.position} is not "
            f"allowed ({exc.reason}); escape it in a double-quoted string"
        ) from exc
    except yaml.YAMLError as exc:
        raise CardError(f"{where}: YAML error: {' '.join(str(exc).split())}") from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors: '0x_' as an int, '2001-13-45' as a date, ...
        raise CardError(f"{where}: YAML error: a value cannot be read: {exc}") from exc


def load_yaml(path: Path) -> Any:
    """Read and parse ``path``; raise :class:`CardError` naming the file on any error."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc
    return parse_yaml(decode_utf8(data, path), path)


class Locator:
    """The line of a value in a YAML text, found by its path (``("models", 3, "palette", 2)``).

    Built only on error paths: the node tree is composed (PyYAML's composer, nothing is
    constructed) on the first :meth:`line` call and kept for the next ones.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._root: yaml.Node | None = None
        self._composed = False

    def _compose(self) -> yaml.Node | None:
        if not self._composed:
            self._composed = True
            try:
                self._root = yaml.compose(self._text, Loader=_Loader)  # composes, builds nothing
            except (yaml.YAMLError, ValueError, TypeError, RecursionError):
                self._root = None
        return self._root

    def line(self, path: Sequence[Any]) -> int | None:
        """The 1-based line of the value at ``path``: a mapping value's key line, a list item's
        own line; where the path goes beyond what the text holds (a missing key, an item past
        the end of a list), the line of the deepest value that exists. None if the text does
        not compose."""
        node = self._compose()
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            if isinstance(node, yaml.MappingNode):
                found = next(((k, v) for k, v in node.value
                              if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
                if found is None:
                    break
                line, node = found[0].start_mark.line + 1, found[1]
            elif (isinstance(node, yaml.SequenceNode) and type(part) is int
                  and 0 <= part < len(node.value)):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def lines_where(self, path: Sequence[Any], key: str, value: str) -> list[int]:
        """The lines of the items of the list at ``path`` that are mappings whose ``key`` is
        the plain text ``value`` (the cards of one name in a ``models:`` list)."""
        root = self._compose()
        node = root
        for part in path:
            if not isinstance(node, yaml.MappingNode):
                return []
            node = next((v for k, v in node.value
                         if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
        if not isinstance(node, yaml.SequenceNode):
            return []
        return [item.start_mark.line + 1 for item in node.value
                if isinstance(item, yaml.MappingNode) and any(
                    isinstance(k, yaml.ScalarNode) and k.value == key
                    and isinstance(v, yaml.ScalarNode) and v.value == value
                    for k, v in item.value)]
