"""Loading the registry's sources: the built-in ``registry.yaml``, each plugin's ``zoo_models``
hook, the files in ``ZOO_REGISTRY`` and the files passed explicitly, each compiled once
(:mod:`zoo.catalog.compiled`); which source owns each name (clashes, a name defined twice by
one source); the broken cards of plugins (each disables only itself); and the builders the
plugins register. :class:`~zoo.catalog.registry.Registry` answers the queries on top."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from zoo._core.names import printable
from zoo.catalog.compiled import Broken, Compiled, compile_cards, compile_data, compile_file
from zoo.catalog.parsing import parse_each, parse_plugin_file, parse_registry_bytes
from zoo.errors import CardError

if TYPE_CHECKING:
    from zoo.catalog.plugins import PluginHost
    from zoo.catalog.schema import ModelCard

BUILTIN_SOURCE = "built-in registry.yaml"
REGISTRY_ENV = "ZOO_REGISTRY"


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


class RegistrySources:
    """The loading half of the registry: fills the tables the queries read."""

    host: PluginHost
    _where: dict[str, tuple[_Origin, int]]
    _conflicts: dict[str, list[str]]
    _clashing: dict[str, list[_Origin]]
    _broken: dict[str, tuple[_Origin, Broken]]
    _broken_all: list[tuple[_Origin, Broken]]
    _builders: dict[str, _Builder]
    _cards: dict[str, ModelCard]
    _sorted: list[str] | None

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
                    functools.partial(compile_file, path, parse_plugin_file, fresh=True,
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


def _detail(origin: _Origin, item: Broken) -> str:
    """A broken card's reason without the plugin's name in front (the caller names it)."""
    return item.reason.removeprefix(f"plugin {origin.plugin!r}: ")
