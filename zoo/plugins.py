"""Discover, load and isolate plugins registered under the ``zoo`` entry-point group.

Built-in plugins are declared in zoo's own ``pyproject.toml`` under the same group, so there
is one discovery path for everyone. Each entry point is loaded and registered on its own: a
plugin that raises on import (or whose hooks later raise or return invalid data) is recorded
as failed with its reason, a one-line warning goes to stderr, and the others keep working.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from zoo import hookspecs

ENTRY_POINT_GROUP = "zoo"
hookimpl = pluggy.HookimplMarker("zoo")


@dataclass
class PluginInfo:
    """One discovered plugin and how loading it went."""

    name: str
    module: str
    dist: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def warn(message: str) -> None:
    """Print a one-line warning to stderr (the CLI and the Python API share it)."""
    print(f"zoo: warning: {message}", file=sys.stderr)


def _dist_label(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?"
    return f"{dist.metadata['Name']} {dist.version}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginHost:
    """The pluggy manager plus a record of every plugin's fate."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("zoo")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}

    def load_entry_points(self) -> None:
        """Load every entry point of the group, sorted by name, each in isolation."""
        seen: set[str] = set()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:  # the same dist visible twice on sys.path
                continue
            seen.add(ep.name)
            info = PluginInfo(name=ep.name, module=ep.value, dist=_dist_label(ep))
            self.plugins[ep.name] = info
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # any failure: isolation is the point
                if self.pm.get_plugin(ep.name) is not None:
                    self.pm.unregister(name=ep.name)
                self.fail(ep.name, f"failed to load: {_one_line(exc)}")

    def register(self, plugin: object, name: str) -> None:
        """Register an in-process plugin object (tests and embedding apps)."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name=name, module=repr(plugin), dist="in-process")

    def fail(self, name: str, reason: str) -> None:
        """Mark plugin ``name`` failed: warn once, unregister it, keep the reason."""
        info = self.plugins.setdefault(name, PluginInfo(name=name, module="?", dist="?"))
        if info.error is None:
            info.error = reason
            warn(f"plugin {name!r} disabled: {reason}")
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)

    def call_each(self, hook_name: str) -> Iterator[tuple[str, Any]]:
        """Call ``hook_name`` on each live plugin separately, yielding (plugin, result).

        A plugin whose hook raises is marked failed and skipped, so one bad plugin cannot
        hide the others' contributions.
        """
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order (pluggy calls them LIFO)
            name = self.pm.get_name(impl.plugin) or impl.plugin_name
            try:
                result = impl.function()
            except Exception as exc:  # any failure disables this plugin only
                self.fail(name, f"{hook_name}() raised {_one_line(exc)}")
                continue
            if result is not None:
                yield name, result


@contextlib.contextmanager
def plugin_code(plugin: str, what: str) -> Iterator[None]:
    """Run plugin code contained: its stdout goes to stderr (zoo's stdout stays clean for
    ``--json`` and printed paths), and any exception or ``SystemExit`` it raises becomes a
    :class:`~zoo.errors.PluginError` naming the plugin and ``what`` it was doing.
    zoo's own errors (:class:`~zoo.errors.ZooError`) pass through unchanged."""
    from zoo.errors import PluginError, ZooError

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except (ZooError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise PluginError(f"plugin {plugin!r} failed in {what}: {_one_line(exc)}") from exc


def resolve_dotted(ref: str) -> Any:
    """Import ``"package.module:attr"`` (or ``"package.module.attr"``) and return the attr."""
    module_name, sep, attr = ref.partition(":")
    if not sep:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{ref!r} is not 'package.module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def as_callable(ref: Callable[..., Any] | str) -> Callable[..., Any]:
    """A builder/exporter given as a callable or dotted string, as a callable."""
    return resolve_dotted(ref) if isinstance(ref, str) else ref


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loading entry points on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
        _HOST.load_entry_points()
    return _HOST


def reset_host() -> None:
    """Forget loaded plugins (tests; apps that install plugins at run time)."""
    global _HOST
    _HOST = None
