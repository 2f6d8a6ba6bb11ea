"""The registry: every model card from the built-in catalogue, plugins and extra files.

Sources, in order: zoo's ``registry.yaml``; each plugin's ``zoo_models`` hook; the files in
``ZOO_REGISTRY`` (``os.pathsep``-separated); files passed explicitly (``--registry``). A bad
card in a registry *file* is an error naming the file, the model and the field; a bad card
from a *plugin* disables that plugin only. A name defined by two sources is unavailable and
names both.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from zoo.errors import CardError, PluginError, UnknownModelError
from zoo.plugins import PluginHost, as_callable, get_host, warn
from zoo.schema import ModelCard
from zoo.yamlio import load_yaml

BUILTIN_SOURCE = "built-in registry.yaml"
REGISTRY_ENV = "ZOO_REGISTRY"


def builtin_registry_path() -> Path:
    """Where the installed built-in catalogue lives."""
    return Path(str(resources.files("zoo") / "registry.yaml"))


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        # card-wide rules (palette vs labels vs classes) name their fields in the message
        parts.append(f"field {loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_card(data: Any, where: str) -> ModelCard:
    """Validate one card; errors name ``where`` (file or plugin), the model and the field."""
    if isinstance(data, ModelCard):
        return data
    if not isinstance(data, dict):
        raise CardError(f"{where}: each model must be a mapping, got {type(data).__name__}")
    label = data.get("name", "<no name>")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise CardError(f"{where}: model {label!r}: {_format_validation(exc)}") from exc


def read_registry_file(path: Path) -> list[ModelCard]:
    """Load and validate every card in a registry YAML file (``models:`` list)."""
    doc = load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CardError(f"{path}: expected a mapping with a 'models:' list of model cards")
    unknown = set(doc) - {"version", "models"}
    if unknown:
        raise CardError(f"{path}: unknown top-level keys {sorted(unknown)}; use 'models:'")
    return [parse_card(item, str(path)) for item in doc["models"]]


def env_registry_files() -> list[Path]:
    """Paths named by ``ZOO_REGISTRY``; a missing one is an error naming the variable."""
    paths = [Path(p) for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p.strip()]
    for path in paths:
        if not path.is_file():
            raise CardError(f"{REGISTRY_ENV} names {path}, which is not a file; fix or unset it")
    return paths


@dataclass(frozen=True)
class _Builder:
    plugin: str
    ref: Any


class Registry:
    """All known model cards, their sources, and the builders that make them."""

    def __init__(self, host: PluginHost | None = None, extra_files: Sequence[Path] = ()) -> None:
        self.host = host or get_host()
        self._cards: dict[str, ModelCard] = {}
        self._sources: dict[str, str] = {}
        self._conflicts: dict[str, list[str]] = {}
        self._builders: dict[str, _Builder] = {}
        self._load(extra_files)

    # -- loading -------------------------------------------------------------------------

    def _load(self, extra_files: Sequence[Path]) -> None:
        self._add_all(read_registry_file(builtin_registry_path()), BUILTIN_SOURCE)
        self._load_plugin_models()
        self._load_builders()
        for path in [*env_registry_files(), *extra_files]:
            if not Path(path).is_file():
                raise CardError(f"registry file {path} does not exist")
            self._add_all(read_registry_file(Path(path)), str(path))
        self._cards = {
            name: self._attribute(card) for name, card in sorted(self._cards.items())
        }

    def _load_plugin_models(self) -> None:
        for plugin, items in self.host.call_each("zoo_models"):
            info = self.host.plugins.get(plugin)
            where = f"plugin {plugin!r}"
            try:
                cards = [c.model_copy(update={"plugin": plugin}) for c in _cards_from(items, where)]
            except CardError as exc:
                self.host.fail(plugin, f"invalid model card: {exc}")
                continue
            label = f"plugin {plugin!r} ({info.dist})" if info else where
            self._add_all(cards, label)

    def _load_builders(self) -> None:
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

    def _add_all(self, cards: Iterable[ModelCard], source: str) -> None:
        for card in cards:
            name = card.name
            if name in self._conflicts:
                self._conflicts[name].append(source)
            elif name in self._sources:
                first = self._sources.pop(name)
                del self._cards[name]
                self._conflicts[name] = [first, source]
                warn(f"model {name!r} is defined by both {first} and {source}; "
                     "it is unavailable until one is removed")
            else:
                self._cards[name] = card
                self._sources[name] = source

    def _attribute(self, card: ModelCard) -> ModelCard:
        if card.plugin is None and card.architecture in self._builders:
            return card.model_copy(update={"plugin": self._builders[card.architecture].plugin})
        return card

    # -- queries -------------------------------------------------------------------------

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted model names, optionally filtered by a glob such as ``'deeplab*'``."""
        names = list(self._cards)
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names

    def cards(self, pattern: str | None = None) -> list[ModelCard]:
        """Cards whose names match ``pattern`` (all when None), sorted by name."""
        return [self._cards[n] for n in self.names(pattern)]

    def get(self, name: str) -> ModelCard:
        """The card called ``name``; unknown names suggest the closest ones."""
        if name in self._cards:
            return self._cards[name]
        if name in self._conflicts:
            sources = " and ".join(self._conflicts[name])
            raise PluginError(
                f"model {name!r} is defined by both {sources}; uninstall or rename one of them"
            )
        close = difflib.get_close_matches(name, [*self._cards, *self._conflicts], n=3, cutoff=0.5)
        if not close:
            close = [n for n in self._cards if name in n or n.startswith(name)][:3]
        raise UnknownModelError(name, close)

    def source(self, name: str) -> str:
        """Where the card called ``name`` came from."""
        self.get(name)
        return self._sources[name]

    @property
    def conflicts(self) -> dict[str, list[str]]:
        """Model names defined more than once, with every source that defined them."""
        return {k: list(v) for k, v in self._conflicts.items()}

    def builder_ref(self, card: ModelCard) -> tuple[str, Any]:
        """(plugin name, registered ref) of ``card``'s builder, without importing it."""
        entry = self._builders.get(card.architecture)
        if entry is None:
            known = ", ".join(sorted(self._builders)) or "none"
            raise PluginError(
                f"model {card.name!r}: no plugin provides architecture {card.architecture!r} "
                f"(known: {known}); install the plugin or fix 'architecture'"
            )
        return entry.plugin, entry.ref

    def builder(self, card: ModelCard) -> Callable[..., Any]:
        """The callable that builds ``card``'s model (imported now, not at listing time)."""
        arch = card.architecture
        entry = self._builders.get(arch)
        ref: Any = entry.ref if entry else (arch if ":" in arch else None)
        if ref is None:
            known = ", ".join(sorted(self._builders)) or "none"
            raise PluginError(
                f"model {card.name!r}: no plugin provides architecture {arch!r} "
                f"(known: {known}); install the plugin or fix 'architecture'"
            )
        try:
            return as_callable(ref)
        except Exception as exc:
            raise PluginError(f"model {card.name!r}: cannot import builder {ref!r}: {exc}") from exc


def _cards_from(items: Any, where: str) -> list[ModelCard]:
    if not isinstance(items, list | tuple):
        raise CardError(f"{where}: zoo_models() must return a list, got {type(items).__name__}")
    cards: list[ModelCard] = []
    for item in items:
        if isinstance(item, str | Path):
            cards.extend(read_registry_file(Path(item)))
        else:
            cards.append(parse_card(item, where))
    return cards


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
    from zoo.plugins import reset_host

    reset_host()
