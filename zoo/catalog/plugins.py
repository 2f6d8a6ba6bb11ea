"""Discover, load and contain plugins registered under the ``zoo`` entry-point group.

Built-in plugins are declared in zoo's own ``pyproject.toml`` under the same group, so there
is one discovery path for everyone. Each entry point is loaded and registered on its own: a
plugin that raises on import (or whose hooks later raise or return invalid data) is recorded
as failed with its reason, a one-line warning goes to stderr, and the others keep working.

Plugins are code and trusted as code, but their mistakes are theirs: while a plugin's code
runs (its import, its hooks, its builders and exporters) its ``print()`` output goes to
stderr, so zoo's stdout (``--json``, the path ``zoo fetch`` prints) stays clean, and anything
it raises, ``SystemExit`` included, is reported naming the plugin. Only ``KeyboardInterrupt``
passes through. See :func:`plugin_code`.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pluggy

from zoo.catalog import hookspecs

ENTRY_POINT_GROUP = "zoo"
#: OSError numbers that are the machine's faults, not a plugin's: :func:`plugin_code` lets
#: them through so they are reported as disk problems.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
hookimpl = pluggy.HookimplMarker("zoo")


class PluginInfo:
    """One discovered plugin and how loading it went (a plain class: ``dataclasses`` would
    cost every ``zoo list`` its import)."""

    __slots__ = ("dist", "error", "module", "name")

    def __init__(self, name: str, module: str, dist: str, error: str | None = None) -> None:
        self.name = name
        self.module = module
        self.dist = dist
        self.error = error

    def __repr__(self) -> str:
        return (f"PluginInfo(name={self.name!r}, module={self.module!r}, dist={self.dist!r}, "
                f"error={self.error!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PluginInfo):
            return NotImplemented
        return (self.name, self.module, self.dist, self.error) == (
            other.name, other.module, other.dist, other.error)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    @property
    def ok(self) -> bool:
        return self.error is None


def warn(message: str) -> None:
    """Print a one-line warning to stderr (the CLI and the Python API share it); control
    characters in it (a plugin's error text may hold escape codes) are shown escaped."""
    from zoo._core.log import warn as channel

    channel(message, once=False)


def _one_line(exc: BaseException) -> str:
    """``"ValueError: the message"`` on one line; ``sys.exit(n)`` reads as what it is."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): a plugin must not call sys.exit()"
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_redirect_lock = threading.Lock()
_redirect_depth = 0
_redirect_saved: Any = None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send ``print()`` and other writes to ``sys.stdout`` to stderr for the block.

    Blocks may nest and overlap across threads (an export runs the model on a second thread
    while its format prepares): the first to enter swaps ``sys.stdout``, the last to leave
    puts it back (``contextlib.redirect_stdout`` would restore in the wrong order)."""
    global _redirect_depth, _redirect_saved
    with _redirect_lock:
        if _redirect_depth == 0:
            _redirect_saved = sys.stdout
            sys.stdout = sys.stderr
        _redirect_depth += 1
    try:
        yield
    finally:
        with _redirect_lock:
            _redirect_depth -= 1
            if _redirect_depth == 0:
                sys.stdout = _redirect_saved
                _redirect_saved = None


class PluginHost:
    """The pluggy manager plus a record of every plugin's fate."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("zoo")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}

    def load_entry_points(self) -> None:
        """Load every entry point of the group, sorted by name, each in isolation.

        One name, one plugin: a built-in plugin's name (zoo's own entry points) stays the
        built-in's, and otherwise the first distribution on ``sys.path`` keeps it; every other
        distribution's entry point of that name is ignored with one warning naming it, and
        listed (as ``ignored: ...``) by ``zoo plugins``.
        """
        from zoo.catalog import distributions

        by_name: dict[str, list[distributions.EntryPointInfo]] = {}
        for ep in distributions.entry_points(ENTRY_POINT_GROUP):
            by_name.setdefault(ep.name, []).append(ep)
        for candidates in by_name.values():
            builtin = [c for c in candidates if _is_zoo(c.dist)]
            ep = (builtin or candidates)[0]
            info = PluginInfo(name=ep.name, module=ep.value, dist=ep.dist)
            self.plugins[ep.name] = info
            try:
                with _stdout_to_stderr():
                    plugin = distributions.load(ep.value)
                    self.pm.register(plugin, name=ep.name)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # anything, SystemExit too: isolation is the point
                if self.pm.get_plugin(ep.name) is not None:
                    self.pm.unregister(name=ep.name)
                self.fail(ep.name, f"failed to load: {_one_line(exc)}")
            for other in candidates:
                if other.dist != ep.dist:
                    self._shadowed(other, ep, bool(builtin))

    def _shadowed(self, other: Any, kept: Any, builtin: bool) -> None:
        """Record and warn that ``other`` (an entry point) lost its name to ``kept``."""
        owner = "a built-in plugin of zoo" if builtin else f"a plugin of {kept.dist}"
        reason = (f"ignored: {other.name!r} is {owner}; rename this entry point in "
                  f"{other.dist}")
        warn(f"distribution {other.dist} registers a zoo plugin {other.name!r} "
             f"({other.value}), but {other.name!r} is {owner}; {other.dist}'s is ignored "
             "(rename its entry point)")
        label = f"{other.name} ({other.dist})"  # not its name: it provides no models
        self.plugins[label] = PluginInfo(name=label, module=other.value, dist=other.dist,
                                         error=reason)

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

        A plugin whose hook raises (``SystemExit`` included) is marked failed and skipped, so
        one bad plugin cannot hide the others' contributions; what a hook prints goes to
        stderr.
        """
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order (pluggy calls them LIFO)
            name = self.pm.get_name(impl.plugin) or impl.plugin_name
            try:
                with _stdout_to_stderr():
                    result = impl.function()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # any failure disables this plugin only
                self.fail(name, f"{hook_name}() raised {_one_line(exc)}")
                continue
            if result is not None:
                yield name, result


@contextlib.contextmanager
def plugin_code(plugin: str, what: str) -> Iterator[None]:
    """Run a block of plugin code contained; use it around every call into a plugin.

    ``plugin`` is the plugin's name (as ``zoo plugins`` shows it) and ``what`` says what the
    code was doing, e.g. ``"building model 'm' (architecture 'a')"`` or ``"format 'x' save"``.
    Inside the block:

    - ``sys.stdout`` is ``sys.stderr``: whatever the plugin prints reaches the user but never
      zoo's stdout (``--json`` documents, the path ``zoo fetch`` prints);
    - any exception, and ``SystemExit`` (``sys.exit()`` in a plugin), becomes a
      :class:`~zoo.errors.PluginError` reading ``plugin 'P' failed in WHAT: Type: message``,
      chained to the original (``--debug`` shows its traceback);
    - :class:`~zoo.errors.ZooError` (zoo's own errors, e.g. called back from the plugin),
      ``KeyboardInterrupt``, ``MemoryError`` and the machine's disk faults (``OSError`` with
      ENOSPC, EDQUOT, EFBIG, EROFS or EIO) pass through unchanged: they are not the plugin's
      mistakes, and the caller (or the CLI) reports them as what they are.

    Example::

        with plugin_code(format_plugin, f"format {fmt!r} export"):
            exporter.export(model, path, options)

    The redirect is process-wide (``sys.stdout`` is a global): output that another thread
    writes to ``sys.stdout`` during the block goes to stderr too. A plugin that writes to
    file descriptor 1 directly or calls ``os._exit`` is out of reach.
    """
    from zoo.errors import PluginError, ZooError

    try:
        with _stdout_to_stderr():
            yield
    except (ZooError, KeyboardInterrupt, MemoryError):
        raise
    except OSError as exc:
        if exc.errno in MACHINE_ERRNOS:
            raise
        raise PluginError(f"plugin {plugin!r} failed in {what}: {_one_line(exc)}") from exc
    except BaseException as exc:
        raise PluginError(f"plugin {plugin!r} failed in {what}: {_one_line(exc)}") from exc


def _is_zoo(dist: str) -> bool:
    """Whether an entry point's ``"Dist 1.2"`` label is zoo's own distribution."""
    from zoo.catalog.distributions import normalize

    return normalize(dist.rsplit(" ", 1)[0]) == "zoo"


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
        from zoo.catalog.distributions import guard_pydantic_plugins

        _HOST = PluginHost()
        _HOST.load_entry_points()
        guard_pydantic_plugins()  # before any card is validated
    return _HOST


def reset_host() -> None:
    """Forget loaded plugins (tests; apps that install plugins at run time)."""
    global _HOST
    _HOST = None
