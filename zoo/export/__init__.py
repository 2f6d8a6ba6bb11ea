"""Export formats: discovery through the ``zoo_exporters`` hook, and the shared interface."""

from __future__ import annotations

from zoo.catalog.plugins import PluginHost, as_callable, get_host, warn
from zoo.errors import PluginError, UsageError
from zoo.export.base import Exporter, ExportOptions, Prepared

__all__ = [
    "ExportOptions", "Exporter", "Prepared", "available_formats", "format_plugin", "get_exporter",
]


def _refs(host: PluginHost) -> dict[str, tuple[str, object]]:
    refs: dict[str, tuple[str, object]] = {}
    for plugin, mapping in host.call_each("zoo_exporters"):
        if not isinstance(mapping, dict):
            host.fail(plugin, "zoo_exporters() must return a dict {format: exporter}")
            continue
        for fmt, ref in mapping.items():
            if fmt in refs:
                warn(f"format {fmt!r} is provided by both {refs[fmt][0]!r} and {plugin!r}; "
                     f"keeping {refs[fmt][0]!r}")
                continue
            refs[fmt] = (plugin, ref)
    return refs


def available_formats(host: PluginHost | None = None) -> list[str]:
    """Names of every export format the installed plugins provide, sorted."""
    return sorted(_refs(host or get_host()))


def format_plugin(fmt: str, host: PluginHost | None = None) -> str:
    """The name of the plugin that provides format ``fmt``."""
    refs = _refs(host or get_host())
    if fmt not in refs:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(sorted(refs))}")
    return refs[fmt][0]


def get_exporter(fmt: str, host: PluginHost | None = None) -> Exporter:
    """The exporter for ``fmt``; an unknown format is a usage error listing the formats."""
    refs = _refs(host or get_host())
    if fmt not in refs:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(sorted(refs))}")
    plugin, ref = refs[fmt]
    from zoo.catalog.plugins import plugin_code

    with plugin_code(plugin, f"loading format {fmt!r}"):
        obj = as_callable(ref) if isinstance(ref, str) else ref
        exporter = obj() if isinstance(obj, type) or not isinstance(obj, Exporter) else obj
    if not isinstance(exporter, Exporter):
        raise PluginError(f"format {fmt!r} from plugin {plugin!r} is not a zoo.export.Exporter")
    missing = [a for a in ("name", "suffix", "description", "runtime")
               if not isinstance(getattr(exporter, a, None), str)]
    if missing:
        raise PluginError(f"format {fmt!r} from plugin {plugin!r}: the exporter does not set "
                          f"{', '.join(missing)} (see docs/plugins.md)")
    return exporter
