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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._core.names import printable
from zoo.catalog.compiled import (
    Broken,
    StaleEntry,
    Summary,
)
from zoo.catalog.loading import (
    BUILTIN_SOURCE,
    REGISTRY_ENV,
    RegistrySources,
    _Builder,
    _detail,
    _Origin,
    builtin_registry_path,
    env_registry_files,
)
from zoo.catalog.parsing import (
    parse_card,
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

_SHOWN = 5  # model names one grouped warning shows


class Registry(RegistrySources):
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
