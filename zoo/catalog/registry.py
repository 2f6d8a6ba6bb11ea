"""The registry: every model card from the built-in catalogue, plugins and extra files.

Sources, in order: zoo's ``registry.yaml``; each plugin's ``zoo_models`` hook; the files in
``ZOO_REGISTRY`` (``os.pathsep``-separated); files passed explicitly (``--registry``). A bad
card in a registry *file* is an error naming the file, the model and the field; a bad card
from a *plugin* disables that plugin only. A name defined by two sources is unavailable and
names both.

Pay for what you use: each source is compiled once into ``ZOO_HOME/registry``
(:mod:`zoo.catalog.compiled`), so listing reads names and a few columns, and looking a model up
validates that one card. Nothing here imports pydantic until a card is asked for.

A card's ``architecture`` names a builder that a plugin registered with ``zoo_builders``;
nothing is ever imported on a card's say-so.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from zoo._core.names import printable
from zoo.catalog.compiled import (
    Compiled,
    StaleEntry,
    Summary,
    compile_cards,
    compile_data,
    compile_file,
)
from zoo.errors import CardError, PluginError, UnknownModelError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from zoo.catalog.plugins import PluginHost
    from zoo.catalog.schema import ModelCard

BUILTIN_SOURCE = "built-in registry.yaml"
REGISTRY_ENV = "ZOO_REGISTRY"
_MAX_ERRORS = 10  # validation errors shown for one card


def builtin_registry_path() -> Path:
    """Where the installed built-in catalogue lives."""
    return Path(__file__).with_name("registry.yaml")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loc_part(part: Any) -> str:
    """One step of a field path: a plain name as it is, anything odd (a key holding spaces,
    newlines or control characters) quoted, so the error stays one readable line."""
    text = str(part)[:80]
    return text if text.isidentifier() or text.isdigit() else repr(text)


def _format_validation(exc: ValidationError) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:_MAX_ERRORS]:
        loc = ".".join(_loc_part(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        # card-wide rules (palette vs labels vs classes) name their fields in the message
        parts.append(f"field {loc}: {msg}" if loc else msg)
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return "; ".join(parts)


def parse_card(data: Any, where: str) -> ModelCard:
    """Validate one card; errors name ``where`` (file or plugin), the model and the field."""
    from pydantic import ValidationError

    from zoo.catalog.schema import ModelCard

    if isinstance(data, ModelCard):
        return data
    if not isinstance(data, dict):
        raise CardError(f"{where}: each model must be a mapping, got {type(data).__name__}")
    name = data.get("name", "<no name>")
    label = _short(name) if isinstance(name, str) else f"<{type(name).__name__} name>"
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        message = f"{where}: model {label}: {_format_validation(exc)}"
        raise CardError(printable(message)) from exc


def parse_registry_bytes(data: bytes, path: Path) -> list[ModelCard]:
    """Validate every card of a registry file's bytes (``models:`` list); errors name the
    file and, for YAML, the line; for cards, the model and the field."""
    from zoo.catalog.yamlio import decode_utf8, parse_yaml

    doc = parse_yaml(decode_utf8(data, path), path)
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CardError(f"{path}: expected a mapping with a 'models:' list of model cards")
    unknown = set(doc) - {"version", "models"}
    if unknown:
        shown = ", ".join(sorted(_short(k, 40) for k in unknown)[:_MAX_ERRORS])
        raise CardError(printable(f"{path}: unknown top-level keys [{shown}]; use 'models:'"))
    items: list[Any] = doc["models"]
    cards = []
    for i, item in enumerate(items):
        cards.append(parse_card(item, str(path)))
        items[i] = None  # the raw data can go: a large catalogue is held once, not twice
    return cards


def read_registry_file(path: Path) -> list[ModelCard]:
    """Load and validate every card in a registry YAML file (``models:`` list)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc
    return parse_registry_bytes(data, Path(path))


def env_registry_files() -> list[Path]:
    """Paths named by ``ZOO_REGISTRY``; a missing one is an error naming the variable."""
    paths = [Path(p) for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p.strip()]
    for path in paths:
        if not path.is_file():
            raise CardError(f"{REGISTRY_ENV} names {path}, which is not a file; fix or unset it")
    return paths


class _Builder(NamedTuple):
    plugin: str
    ref: Any


def _file_identity(path: Path) -> tuple[int, int] | str:
    """What makes two paths one file: (device, inode), or the resolved path where the file
    system has no inode numbers."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)


class _Origin:
    """One compiled source and how to compile it again if its entry proves stale."""

    __slots__ = ("compiled", "label", "plugin", "recompile")

    def __init__(self, label: str, compiled: Compiled, plugin: str | None,
                 recompile: Callable[[], Compiled] | None) -> None:
        self.label = label
        self.compiled = compiled
        self.plugin = plugin  # the plugin that contributed these cards, if one did
        self.recompile = recompile


class Registry:
    """All known model cards, their sources, and the builders that make them."""

    def __init__(self, host: PluginHost | None = None, extra_files: Sequence[Path] = ()) -> None:
        from zoo.catalog.plugins import get_host

        self.host = host or get_host()
        self._where: dict[str, tuple[_Origin, int]] = {}
        self._conflicts: dict[str, list[str]] = {}
        self._builders: dict[str, _Builder] = {}
        self._cards: dict[str, ModelCard] = {}
        self._sorted: list[str] | None = None  # names(), sorted when first asked
        self._load(extra_files)

    # -- loading -------------------------------------------------------------------------

    def _load(self, extra_files: Sequence[Path]) -> None:
        self._add_file(builtin_registry_path(), BUILTIN_SOURCE)
        self._load_plugin_models()
        self._load_builders()
        seen = {_file_identity(builtin_registry_path())}
        for path in [*env_registry_files(), *extra_files]:
            if not Path(path).is_file():
                raise CardError(f"registry file {path} does not exist")
            identity = _file_identity(Path(path))
            if identity in seen:  # one file named twice (a duplicate, a symlink, ./x and x)
                continue
            seen.add(identity)
            self._add_file(Path(path), str(path))

    def _add_file(self, path: Path, label: str, plugin: str | None = None) -> None:
        def recompile() -> Compiled:
            return compile_file(path, parse_registry_bytes, fresh=True)

        compiled = compile_file(path, parse_registry_bytes)
        self._add(_Origin(label, compiled, plugin, recompile))

    def _load_plugin_models(self) -> None:
        for plugin, items in self.host.call_each("zoo_models"):
            info = self.host.plugins.get(plugin)
            label = f"plugin {plugin!r} ({info.dist})" if info else f"plugin {plugin!r}"
            try:
                origins = self._plugin_origins(plugin, items, label)
            except CardError as exc:
                self.host.fail(plugin, f"invalid model card: {exc}")
                continue
            for origin in origins:
                self._add(origin)

    def _plugin_origins(self, plugin: str, items: Any, label: str) -> list[_Origin]:
        """A plugin's cards: its YAML files, its card dicts and its ModelCard objects."""
        where = f"plugin {plugin!r}"
        if not isinstance(items, list | tuple):
            raise CardError(
                f"{where}: zoo_models() must return a list, got {type(items).__name__}"
            )
        origins: list[_Origin] = []
        dicts: list[Any] = []
        objects: list[ModelCard] = []
        for item in items:
            if isinstance(item, str | Path):
                path = Path(item)
                origins.append(_Origin(
                    label, compile_file(path, parse_registry_bytes), plugin,
                    lambda p=path: compile_file(p, parse_registry_bytes, fresh=True)))
            elif isinstance(item, dict):
                dicts.append(item)
            else:  # a ModelCard, or something parse_card refuses by name
                objects.append(parse_card(item, where))

        def parse(data: list[Any]) -> list[ModelCard]:
            return [parse_card(item, where) for item in data]

        if dicts:
            ident = f"{plugin}\0{label}"
            origins.append(_Origin(
                label, compile_data(ident, dicts, parse), plugin,
                lambda: compile_data(ident, dicts, parse, fresh=True)))
        if objects:
            origins.append(_Origin(label, compile_cards(objects), plugin, None))
        return origins

    def _load_builders(self) -> None:
        from zoo.catalog.plugins import warn

        for plugin, mapping in self.host.call_each("zoo_builders"):
            if not isinstance(mapping, dict):
                self.host.fail(plugin, "zoo_builders() must return a dict {architecture: builder}")
                continue
            for arch, ref in mapping.items():
                other = self._builders.get(arch)
                if other is not None:
                    warn(f"architecture {arch!r} is provided by both {other.plugin!r} and "
                         f"{plugin!r}; keeping {other.plugin!r}")
                    continue
                self._builders[arch] = _Builder(plugin, ref)

    def _add(self, origin: _Origin) -> None:
        from zoo.catalog.plugins import warn

        source = origin.label
        names = origin.compiled.names
        self._sorted = None
        if not (self._where.keys() & names or self._conflicts.keys() & names) and len(
                set(names)) == len(names):  # the common case: nothing clashes
            self._where.update({name: (origin, index) for index, name in enumerate(names)})
            return
        for index, name in enumerate(names):
            if name in self._conflicts:
                self._conflicts[name].append(source)
            elif name in self._where:
                first = self._where.pop(name)[0].label
                self._conflicts[name] = [first, source]
                warn(printable(f"model {name!r} is defined by both {first} and {source}; "
                               "it is unavailable until one is removed"))
            else:
                self._where[name] = (origin, index)

    def _owner(self, origin: _Origin, plugin: str | None, architecture: str) -> str | None:
        """The plugin a card belongs to: the one that contributed it, else the card's own
        ``plugin``, else the plugin that provides its architecture."""
        if origin.plugin is not None:
            return origin.plugin
        if plugin is None and architecture in self._builders:
            return self._builders[architecture].plugin
        return plugin

    # -- queries -------------------------------------------------------------------------

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted model names, optionally filtered by a glob such as ``'deeplab*'``."""
        if self._sorted is None:
            self._sorted = sorted(self._where)
        names = self._sorted
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else list(names)

    def summaries(self, pattern: str | None = None) -> list[Summary]:
        """What ``zoo list`` shows of each matching card (sorted by name), without building
        the cards: name, family, classes, output contract, parameters, default weights size,
        architecture and plugin."""
        rows = []
        where, owner_of = self._where, self._owner
        for name in self.names(pattern):
            if name not in where:
                continue  # its source changed and dropped it while this list was made
            summary = self._summary(*where[name], name)
            if summary is None:
                continue
            owner = owner_of(where[name][0], summary.plugin, summary.architecture)
            rows.append(summary if owner == summary.plugin else summary._replace(plugin=owner))
        return rows

    def _summary(self, origin: _Origin, index: int, name: str) -> Summary | None:
        """The summary of card ``name`` (compiling its source again, once, if the stored
        summaries are damaged or stale); None if the source no longer has the card."""
        try:
            return origin.compiled.summaries[index]
        except StaleEntry:
            if origin.recompile is None:
                raise
            found = self._recompile(origin, name)
        return None if found is None else found[0].compiled.summaries[found[1]]

    def _recompile(self, origin: _Origin, name: str) -> tuple[_Origin, int] | None:
        """Compile ``origin`` again (its source changed since this registry read it) and
        re-point this registry's names at the new positions; names the source no longer has
        are dropped, new ones wait for the next registry (one consistent view per process).
        Returns where ``name`` is now, or None if it is gone."""
        assert origin.recompile is not None
        origin.compiled = origin.recompile()
        position = {n: i for i, n in enumerate(origin.compiled.names)}
        for known, (where, _) in list(self._where.items()):
            if where is origin:
                if known in position:
                    self._where[known] = (origin, position[known])
                else:
                    del self._where[known]
        self._sorted = None
        return self._where.get(name)

    def cards(self, pattern: str | None = None) -> list[ModelCard]:
        """Cards whose names match ``pattern`` (all when None), sorted by name."""
        return [self.get(n) for n in self.names(pattern)]

    def get(self, name: str) -> ModelCard:
        """The card called ``name``; unknown names suggest the closest ones."""
        card = self._cards.get(name)
        if card is not None:
            return card
        if name in self._where:
            card = self._cards[name] = self._materialize(name)
            return card
        if name in self._conflicts:
            sources = " and ".join(self._conflicts[name])
            if all(src.startswith("plugin ") for src in self._conflicts[name][1:]):
                raise PluginError(printable(
                    f"model {name!r} is defined by both {sources}; uninstall or rename one "
                    "of them"))
            # a registry file the user named clashes: bad input (exit 2), not a plugin's fault
            raise CardError(printable(
                f"model {name!r} is defined by both {sources}; rename it in one of the "
                "registry files (or drop the file)"))
        known = sorted([*self._where, *self._conflicts])
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if not close:
            close = [n for n in known if name in n or n.startswith(name)][:3]
        raise UnknownModelError(name, close)

    def _materialize(self, name: str) -> ModelCard:
        """Validate card ``name`` from its compiled source (compiling it again, once, if the
        compiled bytes are stale or damaged)."""
        origin, index = self._where[name]
        try:
            card = self._validated(origin, index, name)
        except (StaleEntry, CardError):
            if origin.recompile is None:
                raise
            found = self._recompile(origin, name)
            if found is None:
                raise CardError(f"{origin.label}: model {name!r} disappeared while zoo was "
                                "reading it; run the command again") from None
            origin, index = found
            try:
                card = self._validated(origin, index, name)
            except StaleEntry as exc:
                raise CardError(f"{origin.label}: changed again while zoo was reading it "
                                f"({exc}); run the command again") from None
        owner = self._owner(origin, card.plugin, card.architecture)
        return card if owner == card.plugin else card.model_copy(update={"plugin": owner})

    @staticmethod
    def _validated(origin: _Origin, index: int, name: str) -> ModelCard:
        card = origin.compiled.live_card(index)
        if card is None:
            card = parse_card(origin.compiled.card_data(index), origin.label)
        if card.name != name:
            raise StaleEntry(f"compiled card {index} is {card.name!r}, not {name!r}")
        return card

    def source(self, name: str) -> str:
        """Where the card called ``name`` came from."""
        if name not in self._where:
            self.get(name)  # raises the right error
        return self._where[name][0].label

    @property
    def conflicts(self) -> dict[str, list[str]]:
        """Model names defined more than once, with every source that defined them."""
        return {k: list(v) for k, v in self._conflicts.items()}

    def builder_ref(self, card: ModelCard) -> tuple[str, Any]:
        """(plugin name, registered ref) of ``card``'s builder, without importing it.

        Only builders that plugins registered with ``zoo_builders`` count: a card's
        ``architecture`` is a key, never an import path."""
        entry = self._builders.get(card.architecture)
        if entry is None:
            known = ", ".join(sorted(self._builders)) or "none"
            raise PluginError(printable(
                f"model {card.name!r}: no plugin provides architecture {card.architecture!r} "
                f"(known: {known}); install the plugin or fix 'architecture'"
            ))
        return entry.plugin, entry.ref

    def builder(self, card: ModelCard) -> Callable[..., Any]:
        """The callable a plugin registered for ``card``'s architecture (imported now, not at
        listing time)."""
        from zoo.catalog.plugins import as_callable, plugin_code

        plugin, ref = self.builder_ref(card)
        with plugin_code(plugin, f"importing builder {ref!r} for model {card.name!r}"):
            return as_callable(ref)


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry (built-in + plugins + ``ZOO_REGISTRY``), built once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry()
    return _DEFAULT


def reset_default_registry() -> None:
    """Forget the cached registry and plugins (after installing a plugin at run time)."""
    global _DEFAULT
    _DEFAULT = None
    from zoo.catalog.plugins import reset_host

    reset_host()
