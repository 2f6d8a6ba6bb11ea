"""Installed distributions as zoo's start needs them: ``zoo`` entry points and a few versions.

``importlib.metadata`` answers both, but importing it and scanning every installed distribution
costs about 50 ms per process, a third of a warm ``zoo.get``. This module reads the same files
the same way: each ``*.dist-info`` / ``*.egg-info`` folder in the ``sys.path`` folders, first
occurrence of a distribution (by normalized name) wins, ``entry_points.txt`` parsed with the
rules of ``importlib.metadata.Sectioned`` (a malformed line in the group is skipped, where
importlib.metadata would raise), ``Name:``/``Version:`` from ``METADATA``/``PKG-INFO``.
Reading every ``entry_points.txt`` directly costs 2-4 ms for a venv of 180 distributions. No
cache, so nothing to go stale.

Where the environment is one this reader does not model (a zip file or an egg, file or folder,
on ``sys.path``, an
import hook other than the standard path finder that can find distributions) it asks
``importlib.metadata`` instead.

A broken distribution (an ``entry_points.txt`` or ``METADATA`` that is not UTF-8 or cannot be
read) is named in one warning and its entry points are left out; it never stops zoo.
importlib.metadata raises on such a file, and pydantic reads every distribution's entry points
the first time it builds a model, so :func:`guard_pydantic_plugins` hands pydantic its plugin
list from this reader when a broken distribution is installed.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from functools import reduce
from typing import Any, NamedTuple

#: EntryPoint.pattern of importlib.metadata: ``module[:attr.attr] [extras]``
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")
_SUFFIXES = (".dist-info", ".egg-info")
#: distribution files that could not be read (each named in one warning)
_BROKEN: set[str] = set()


class EntryPointInfo(NamedTuple):
    """One entry point: its name, its ``module:attr`` value, and ``"Dist 1.2"`` (or ``"?"``)."""

    name: str
    value: str
    dist: str


class _Dist(NamedTuple):
    path: str  # the .dist-info / .egg-info folder
    normalized: str


def normalize(name: str) -> str:
    """A distribution name as importlib.metadata compares them (PEP 503, underscores)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _modelled() -> bool:
    """Whether every place distributions can come from is a plain folder this module reads."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if finder is not PathFinder and hasattr(finder, "find_distributions"):
            return False
    return not any(entry and (os.path.isfile(entry) or entry.lower().endswith(".egg"))
                   for entry in sys.path)  # zip files and eggs (EGG-INFO inside) are not read


def _path_state() -> tuple[tuple[str, int], ...]:
    """Each ``sys.path`` folder with its mtime: what a folder listing depends on (installing
    or removing a distribution adds or removes a folder, which changes its parent's mtime)."""
    state = []
    for entry in sys.path:
        try:
            state.append((os.path.abspath(entry or "."), os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, -1))
    return tuple(state)


_LISTED: tuple[tuple[tuple[str, int], ...], list[_Dist]] | None = None


def _distributions() -> list[_Dist]:
    """Every distribution on ``sys.path``, first occurrence of each name only, in path order
    (listed once per process while no ``sys.path`` folder changes, as importlib.metadata
    caches its own listings)."""
    global _LISTED
    state = _path_state()
    if _LISTED is not None and _LISTED[0] == state:
        return _LISTED[1]
    found = _list_distributions()
    _LISTED = (state, found)
    return found


def _list_distributions() -> list[_Dist]:
    seen: set[str] = set()
    found = []
    for entry in sys.path:
        root = entry or "."
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for child in names:
            stem, ext = os.path.splitext(child)
            if ext.lower() not in _SUFFIXES:
                continue
            key = normalize(stem.partition("-")[0])
            if key in seen:
                continue
            seen.add(key)
            found.append(_Dist(os.path.join(root, child), key))
    return found


def _read_text(path: str) -> str | None:
    """The UTF-8 text of a distribution's file; None when it is absent. A file that is not
    UTF-8 or cannot be read is None too, with one warning naming its distribution."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return data.decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        _broken(path, f"is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})")
    except OSError as exc:
        _broken(path, f"cannot be read ({exc.strerror or type(exc).__name__})")
    return None


def _broken(path: str, problem: str) -> None:
    """Warn, once per file, that an installed distribution is broken and what is skipped."""
    if path in _BROKEN:
        return
    _BROKEN.add(path)
    folder, name = os.path.split(path)
    what = "its zoo plugins are ignored" if name == "entry_points.txt" else \
        "its name and version are unknown"
    message = (f"installed distribution {os.path.basename(folder)} ({folder}): {name} "
               f"{problem}; {what}; reinstall or remove it")
    from zoo._core.log import warn

    warn(message)


def _section(text: str, group: str) -> list[tuple[str, str]]:
    """``(name, value)`` pairs of section ``[group]`` (importlib.metadata's Sectioned rules)."""
    pairs, current = [], None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line.strip("[]")
            continue
        if current == group and "=" in line:
            name, value = line.split("=", 1)
            pairs.append((name.strip(), value.strip()))
    return pairs


def _header(dist_path: str) -> dict[str, str]:
    """``Name`` and ``Version`` from a distribution's METADATA (or PKG-INFO)."""
    text = _read_text(os.path.join(dist_path, "METADATA"))
    if text is None:
        text = _read_text(os.path.join(dist_path, "PKG-INFO")) or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        key, sep, value = line.partition(":")
        key = key.strip().title()  # header names are case-insensitive (RFC 822)
        if sep and key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    return fields


def entry_points(group: str) -> list[EntryPointInfo]:
    """The entry points of ``group``, sorted by name, as ``importlib.metadata`` finds them."""
    if not _modelled():
        return _entry_points_from_metadata(group)
    found = []
    for dist in _distributions():
        text = _read_text(os.path.join(dist.path, "entry_points.txt"))
        if text is None or f"[{group}]" not in text:
            continue
        pairs = _section(text, group)
        if not pairs:
            continue
        header = _header(dist.path)
        label = f"{header['Name']} {header.get('Version')}" if "Name" in header else "?"
        found.extend(EntryPointInfo(name, value, label) for name, value in pairs)
    return sorted(found, key=lambda ep: ep.name)


def _entry_points_from_metadata(group: str) -> list[EntryPointInfo]:
    """importlib.metadata's answer, one distribution at a time (a broken one is skipped with
    a warning instead of failing them all); first occurrence of a distribution wins."""
    from importlib.metadata import distributions as md_distributions

    found = []
    seen: set[str] = set()
    for dist in md_distributions():
        where = str(getattr(dist, "_path", "?"))
        try:
            name = dist.metadata["Name"]
            key = normalize(name or "")
            if key in seen:
                continue
            seen.add(key)
            eps = [ep for ep in dist.entry_points if ep.group == group]
            label = f"{name} {dist.version}" if eps else "?"
        except UnicodeDecodeError as exc:
            _broken(os.path.join(where, "entry_points.txt"),
                    f"is not UTF-8 (offset {exc.start})")
            continue
        found.extend(EntryPointInfo(ep.name, ep.value, label) for ep in eps)
    return sorted(found, key=lambda ep: ep.name)


def guard_pydantic_plugins() -> None:
    """Keep a broken distribution from stopping pydantic: when one is installed (a non-UTF-8
    ``entry_points.txt``, found by :func:`entry_points`), give pydantic its plugin list (the
    ``pydantic`` entry-point group, read by this module) before it scans every distribution
    with importlib.metadata, which raises on such a file. Costs nothing otherwise."""
    if not any(path.endswith("entry_points.txt") for path in _BROKEN):
        return
    try:
        from pydantic.plugin import _loader
    except ImportError:  # a pydantic without plugins: nothing scans
        return
    if getattr(_loader, "_plugins", False) is not None:
        return  # loaded already, or a pydantic this guard does not know
    disabled = (os.environ.get("PYDANTIC_DISABLE_PLUGINS") or "").split(",")
    plugins: dict[str, Any] = {}
    for ep in entry_points("pydantic"):
        if ep.value in plugins or ep.name in disabled:
            continue
        try:
            plugins[ep.value] = load(ep.value)
        except (ImportError, AttributeError) as exc:
            from zoo._core.log import warn

            warn(f"pydantic plugin {ep.name!r} ({ep.dist}) not loaded: "
                 f"{type(exc).__name__}: {exc}")
    _loader._plugins = plugins


def versions(*names: str) -> dict[str, str | None]:
    """The installed version of each distribution in ``names`` (None: not installed)."""
    if not _modelled():
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as md_version

        out: dict[str, str | None] = {}
        for name in names:
            try:
                out[name] = md_version(name)
            except PackageNotFoundError:
                out[name] = None
        return out
    where = {dist.normalized: dist.path for dist in _distributions()}
    return {name: (_header(where[normalize(name)]).get("Version")
                   if normalize(name) in where else None) for name in names}


def load(value: str) -> Any:
    """The object an entry point's ``value`` names (``EntryPoint.load`` semantics)."""
    match = _VALUE.match(value)
    if match is None:
        raise ValueError(f"entry point value {value!r} is not 'module:attribute'")
    module = importlib.import_module(match.group("module"))
    attrs = filter(None, (match.group("attr") or "").split("."))
    return reduce(getattr, attrs, module)
