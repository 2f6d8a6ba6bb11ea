"""The registry: every model card from the built-in catalogue, plugins and extra files.

Sources, in order: zoo's ``registry.yaml``; each plugin's ``zoo_models`` hook; the files in
``ZOO_REGISTRY`` (``os.pathsep``-separated); files passed explicitly (``--registry``). A bad
card in a registry *file* is an error naming the file, the line, the model and the field; a bad
card from a *plugin* disables that card only (``zoo plugins`` shows it as the plugin's problem,
``zoo info NAME`` says why it is unavailable); a plugin whose hook fails, or whose YAML file
cannot be read, is disabled. A name defined by two sources, or twice by one, is unavailable
and names both places.

Pay for what you use: each source is compiled once into ``ZOO_HOME/registry``
(:mod:`zoo.catalog.compiled`), so listing reads names and a few columns, and looking a model up
validates that one card. Nothing here imports pydantic until a card is asked for.

A card's ``architecture`` names a builder that a plugin registered with ``zoo_builders``;
nothing is ever imported on a card's say-so. Whether a builder exists is decided on every run
(plugins come and go), never cached: ``zoo list``, ``info`` and ``plugins`` report a card whose
architecture no plugin provides, without importing any builder.
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
    Broken,
    Compiled,
    StaleEntry,
    Summary,
    compile_cards,
    compile_data,
    compile_file,
)
from zoo.catalog.parsing import (
    parse_card,
    parse_each,
    parse_plugin_file,
    parse_registry_bytes,
    read_registry_file,
)
from zoo.errors import CardError, PluginError, UnknownModelError

if TYPE_CHECKING:
    from zoo.catalog.plugins import PluginHost
    from zoo.catalog.schema import ModelCard

__all__ = [
    "BUILTIN_SOURCE", "REGISTRY_ENV", "Registry", "builtin_registry_path", "default_registry",
    "env_registry_files", "parse_card", "parse_registry_bytes", "read_registry_file",
    "reset_default_registry",
]

BUILTIN_SOURCE = "built-in registry.yaml"
REGISTRY_ENV = "ZOO_REGISTRY"
_SHOWN = 5  # model names one grouped warning shows


def builtin_registry_path() -> Path:
    """Where the installed built-in catalogue lives."""
    return Path(__file__).with_name("registry.yaml")


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
    """One compiled source, how to compile it again if its entry proves stale, and how to
    say where in it a card is (for a name it defines twice)."""

    __slots__ = ("compiled", "label", "path", "plugin", "recompile", "spots")

    def __init__(self, label: str, compiled: Compiled, plugin: str | None,
                 recompile: Callable[[], Compiled] | None,
                 spots: Callable[[str], list[str]] | None = None) -> None:
        self.label = label
        self.compiled = compiled
        self.plugin = plugin  # the plugin that contributed these cards, if one did
        self.recompile = recompile
        self.spots = spots or (lambda name: [])  # where card NAME is in the source

    def owner(self) -> str:
        """Who answers for this source's cards: the plugin (with its distribution), or the
        registry file."""
        return self.label


def _file_spots(path: Path) -> Callable[[str], list[str]]:
    """Where a registry file defines a model: ``FILE:LINE`` for each card of that name."""
    def spots(name: str) -> list[str]:
        from zoo.catalog.parsing import lines_of_model

        lines = lines_of_model(path, name)
        return [f"{path}:{line}" for line in lines] or [str(path)]
    return spots


def _item_spots(items: Sequence[Any], dicts: bool) -> Callable[[str], list[str]]:
    """Where a plugin's zoo_models() list holds a model: the numbers of its card dicts
    (``dicts``) or of its other items (ModelCard objects)."""
    what = "a card dict" if dicts else "a ModelCard"

    def spots(name: str) -> list[str]:
        found = [i + 1 for i, item in enumerate(items)
                 if isinstance(item, dict) == dicts and not isinstance(item, str | Path)
                 and _item_name(item) == name]
        return [f"zoo_models() item {i} ({what})" for i in found]
    return spots


def _item_name(item: Any) -> Any:
    return item.get("name") if isinstance(item, dict) else getattr(item, "name", None)


class Registry:
    """All known model cards, their sources, and the builders that make them."""

    def __init__(self, host: PluginHost | None = None, extra_files: Sequence[Path] = ()) -> None:
        from zoo.catalog.plugins import get_host

        self.host = host or get_host()
        self._where: dict[str, tuple[_Origin, int]] = {}
        self._conflicts: dict[str, list[str]] = {}
        self._clashing: dict[str, list[_Origin]] = {}  # the sources of each conflict
        self._broken: dict[str, tuple[_Origin, Broken]] = {}  # plugins' invalid cards, by name
        self._broken_all: list[tuple[_Origin, Broken]] = []  # named or not
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

    def _add_file(self, path: Path, label: str) -> None:
        def recompile() -> Compiled:
            return compile_file(path, parse_registry_bytes, fresh=True)

        compiled = compile_file(path, parse_registry_bytes)
        if compiled.broken:  # never from a strict parse; a user's file has no broken cards
            raise CardError(compiled.broken[0].reason)
        self._add(_Origin(label, compiled, None, recompile, _file_spots(path)))

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
                self._add_broken(origin)

    def _plugin_origins(self, plugin: str, items: Any, label: str) -> list[_Origin]:
        """A plugin's cards: its YAML files, its card dicts and its ModelCard objects, each
        card validated on its own (an invalid one is recorded as broken, the rest stay); a
        hook result that is no list, or a YAML file that cannot be read, is the plugin's
        failure (CardError)."""
        where = f"plugin {plugin!r}"
        if not isinstance(items, list | tuple):
            raise CardError(
                f"{where}: zoo_models() must return a list, got {type(items).__name__}"
            )
        origins: list[_Origin] = []
        dicts: list[Any] = []
        others: list[Any] = []
        for item in items:
            if isinstance(item, str | Path):
                path = Path(item)
                origins.append(_Origin(
                    label, compile_file(path, parse_plugin_file, kind="plugin-file"), plugin,
                    lambda p=path: compile_file(p, parse_plugin_file, fresh=True,
                                                kind="plugin-file"),
                    _file_spots(path)))
            elif isinstance(item, dict):
                dicts.append(item)
            else:  # a ModelCard, or something parse_card refuses by name
                others.append(item)

        def parse(data: list[Any]) -> tuple[list[ModelCard], list[Broken]]:
            return parse_each(data, where)

        if dicts:
            ident = f"{plugin}\0{label}"
            origins.append(_Origin(
                label, compile_data(ident, dicts, parse), plugin,
                lambda: compile_data(ident, dicts, parse, fresh=True),
                _item_spots(items, dicts=True)))
        if others:
            objects, broken = parse_each(others, where)
            origins.append(_Origin(label, compile_cards(objects, broken), plugin, None,
                                   _item_spots(items, dicts=False)))
        return origins

    def _add_broken(self, origin: _Origin) -> None:
        """Record (and warn once about) the invalid cards a plugin's source holds: each is
        unavailable, with its reason; the source's other cards are not affected."""
        from zoo.catalog.plugins import warn

        for item in origin.compiled.broken:
            self._broken_all.append((origin, item))
            if item.name is not None:
                self._broken.setdefault(item.name, (origin, item))
            warn(printable(f"plugin {origin.plugin!r}: {_detail(origin, item)}; this model is "
                           "unavailable, the plugin's other models are not affected"))

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
                self._clashing[name].append(origin)
            elif name in self._where:
                first = self._where.pop(name)[0]
                self._conflicts[name] = [first.label, source]
                self._clashing[name] = [first, origin]
                warn(f"{self._clash_text(name)}; it is unavailable until one is removed")
            else:
                self._where[name] = (origin, index)

    def _one_owner(self, name: str) -> bool:
        """Whether every definition of clashing ``name`` comes from one plugin or one file."""
        origins = self._clashing[name]
        if all(o.plugin is not None for o in origins):
            return len({o.plugin for o in origins}) == 1
        return all(o is origins[0] for o in origins)

    def _clash_text(self, name: str) -> str:
        """What is wrong with clashing ``name``, naming where each definition is."""
        origins = self._clashing[name]
        if not self._one_owner(name):
            return printable(f"model {name!r} is defined by both "
                             f"{' and '.join(self._conflicts[name])}")
        spots: list[str] = []
        seen: list[_Origin] = []
        for origin in origins:
            if not any(origin is o for o in seen):
                seen.append(origin)
                spots += origin.spots(name)
        if len(spots) < len(origins):  # one file handed over twice
            spots.append("the same file listed twice by zoo_models()")
        times = "twice" if len(origins) == 2 else f"{len(origins)} times"
        owner = origins[0].owner() if origins[0].plugin else f"registry file {origins[0].label}"
        where = f" ({' and '.join(spots)})" if spots else ""
        return printable(f"{owner} defines model {name!r} {times}{where}")

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
            if self._one_owner(name):
                text = self._clash_text(name)
                if self._clashing[name][0].plugin is not None:
                    raise PluginError(f"{text}; the plugin must rename or drop one of them")
                raise CardError(f"{text}; rename or drop one of them")
            if all(src.startswith("plugin ") for src in self._conflicts[name][1:]):
                raise PluginError(printable(
                    f"model {name!r} is defined by both {sources}; uninstall or rename one "
                    "of them"))
            # a registry file the user named clashes: bad input (exit 2), not a plugin's fault
            raise CardError(printable(
                f"model {name!r} is defined by both {sources}; rename it in one of the "
                "registry files (or drop the file)"))
        if name in self._broken:
            origin, item = self._broken[name]
            raise CardError(printable(
                f"model {name!r} is unavailable: {origin.label}: {_detail(origin, item)}; "
                "the plugin must fix this card (its other models work)"))
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

    # -- problems ------------------------------------------------------------------------

    def missing_builder(self, name: str, architecture: str) -> str | None:
        """Why model ``name`` cannot be built: no plugin registered its ``architecture``
        (naming the builders that are known); None when one did. Imports nothing."""
        if architecture in self._builders:
            return None
        return self._no_builder([name], architecture)

    def _no_builder(self, names: Sequence[str], architecture: str) -> str:
        known = ", ".join(sorted(self._builders)) or "none"
        shown = ", ".join(repr(n) for n in names[:_SHOWN])
        if len(names) > _SHOWN:
            shown += f" and {len(names) - _SHOWN} more"
        what = "model" if len(names) == 1 else "models"
        return printable(f"{what} {shown}: no plugin provides architecture {architecture!r} "
                         f"(known: {known}); install the plugin or fix 'architecture'")

    def builder_problems(self, summaries: Sequence[Summary]) -> list[tuple[str | None, str]]:
        """(owning plugin or None, message) for each group of ``summaries`` whose
        architecture no plugin provides, one message an architecture (and owner)."""
        groups: dict[tuple[str | None, str], list[str]] = {}
        builders = self._builders
        for s in summaries:
            if s.architecture not in builders:
                groups.setdefault((s.plugin, s.architecture), []).append(s.name)
        return [(plugin, self._no_builder(names, arch))
                for (plugin, arch), names in groups.items()]

    def problems(self, summaries: Sequence[Summary] = ()) -> list[tuple[str | None, str]]:
        """What makes part of the catalogue unusable, as (plugin or None, one line): plugins'
        invalid cards, names defined twice, and (among ``summaries``) cards whose
        architecture no plugin provides. None: a problem of the user's registry files."""
        found: list[tuple[str | None, str]] = [
            (origin.plugin, _detail(origin, item)) for origin, item in self._broken_all]
        for name in self._conflicts:
            text = f"{self._clash_text(name)}; it is unavailable until one is removed"
            for plugin in dict.fromkeys(o.plugin for o in self._clashing[name]):
                found.append((plugin, text))
        return found + self.builder_problems(summaries)

    def builder_ref(self, card: ModelCard) -> tuple[str, Any]:
        """(plugin name, registered ref) of ``card``'s builder, without importing it.

        Only builders that plugins registered with ``zoo_builders`` count: a card's
        ``architecture`` is a key, never an import path."""
        entry = self._builders.get(card.architecture)
        if entry is None:
            raise PluginError(self._no_builder([card.name], card.architecture))
        return entry.plugin, entry.ref

    def builder(self, card: ModelCard) -> Callable[..., Any]:
        """The callable a plugin registered for ``card``'s architecture (imported now, not at
        listing time)."""
        from zoo.catalog.plugins import as_callable, plugin_code

        plugin, ref = self.builder_ref(card)
        with plugin_code(plugin, f"importing builder {ref!r} for model {card.name!r}"):
            return as_callable(ref)


def _detail(origin: _Origin, item: Broken) -> str:
    """A broken card's reason without the plugin's name in front (the caller names it)."""
    return item.reason.removeprefix(f"plugin {origin.plugin!r}: ")


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
