"""The export identity: everything that determines an artifact's bytes, hashed.

It keys the local export cache and the team store. Besides the card, the weights' sha256, the
format and the options, it names the *code*: the plugin that built the model and the plugin
that wrote the format, each by distribution and version and by a digest of its package's
source files, so editing a plugin (an editable install too) gives new keys. Nothing here
imports torch or the plugins' modules: sources are found with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.export.manifest import CodeIdentity

if TYPE_CHECKING:
    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard
    from zoo.export.base import Exporter, ExportOptions
    from zoo.weights.resolve import ResolvedWeights

#: Distributions whose versions shape every export.
RUNTIME_DISTS = ("torch", "torchvision")


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _module_of(ref: Any) -> str:
    if isinstance(ref, str):
        return ref.partition(":")[0] if ":" in ref else ref.rpartition(".")[0]
    module = getattr(ref, "__module__", None) or type(ref).__module__
    return str(module)


@functools.cache
def package_digest(module: str) -> str:
    """sha256 over the ``.py`` files of ``module``'s top-level package (or the module file)."""
    top = module.split(".")[0]
    digest = hashlib.sha256()
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        digest.update(f"unknown:{module}".encode())
        return digest.hexdigest()
    if spec.submodule_search_locations:
        files = sorted(
            (p.relative_to(Path(loc)).as_posix(), p)
            for loc in spec.submodule_search_locations
            for p in Path(loc).rglob("*.py")
        )
    elif spec.origin and Path(spec.origin).is_file():
        files = [(Path(spec.origin).name, Path(spec.origin))]
    else:
        files = []
    for rel, path in files:
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_identity(registry: Registry | None, plugin: str, ref: Any) -> CodeIdentity:
    """Who wrote the code behind ``ref`` (a builder or an exporter), and a digest of it."""
    info = registry.host.plugins.get(plugin) if registry is not None else None
    dist = info.dist if info is not None else "in-process"
    return CodeIdentity(plugin=plugin, distribution=dist,
                        source_sha256=package_digest(_module_of(ref)))


def builder_identity(card: ModelCard, registry: Registry) -> CodeIdentity:
    """The code identity of the builder ``card.architecture`` names (not imported)."""
    plugin, ref = registry.builder_ref(card)
    return code_identity(registry, plugin, ref)


def exporter_identity(fmt: str, exporter: Exporter, registry: Registry) -> CodeIdentity:
    """The code identity of the plugin that provides format ``fmt``."""
    from zoo.export import format_plugin

    return code_identity(registry, format_plugin(fmt, registry.host), type(exporter))


def identity_payload(card: ModelCard, weights: ResolvedWeights, exporter: Exporter,
                     options: ExportOptions, builder: CodeIdentity,
                     format_code: CodeIdentity) -> dict[str, Any]:
    """Everything that shapes the artifact's bytes, as JSON-ready data."""
    from zoo import __version__

    versions = {name: _dist_version(name) for name in RUNTIME_DISTS}
    for module, _extra in exporter.requires:
        versions[module] = _dist_version(module)
    return {
        "card": card.model_dump(mode="json"),
        "weights": weights.sha256 or "untrained",
        "format": exporter.name,
        "options": options.as_dict(),
        "builder": builder.model_dump(mode="json"),
        "exporter": format_code.model_dump(mode="json"),
        "zoo": __version__,
        "versions": versions,
    }


def identity_key(payload: dict[str, Any]) -> str:
    """The 64-hex sha256 of a payload's canonical JSON."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
