"""The machine a bench ran on: CPU model, cores, OS, Python, torch and runtime versions."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable

from zoo._core.names import MAX_TEXT
from zoo.bench.record import MAX_RUNTIMES, Machine

UNKNOWN = "unknown"


def one_line(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` as one printable line of at most ``limit`` characters (what a record holds),
    secrets masked (a record is published): zoo's one-line rule, then plain spaces."""
    from zoo._core.log import one_line as shown

    cleaned = "".join(ch if ch.isprintable() else " " for ch in shown(str(text)))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return one_line(value)
    except OSError:
        pass
    return one_line(platform.processor() or platform.machine() or UNKNOWN)


def cores() -> int:
    """CPU cores this process may use (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def distribution_version(import_name: str) -> str | None:
    """The installed version of the distribution that provides ``import_name``, or None."""
    from importlib import metadata

    top = import_name.split(".")[0]
    try:
        names = metadata.packages_distributions().get(top) or [top]
    except Exception:  # a damaged distribution elsewhere must not stop a bench
        names = [top]
    for name in names:
        try:
            return metadata.version(name)
        except (metadata.PackageNotFoundError, ValueError):
            continue
    module = sys.modules.get(top)
    version = getattr(module, "__version__", None)
    return str(version) if version else None


def describe(runtime_modules: Iterable[str] = ()) -> Machine:
    """This machine, with the versions of ``runtime_modules`` (import names; the ones not
    installed are left out)."""
    import torch

    runtimes: dict[str, str] = {}
    for module in sorted(set(runtime_modules) - {"torch"}):
        version = distribution_version(module)
        if version is not None and len(runtimes) < MAX_RUNTIMES:
            runtimes[one_line(module, 100)] = one_line(version)
    return {
        "cpu": cpu_model(),
        "cores": cores(),
        "os": one_line(platform.platform()),
        "python": one_line(platform.python_version()),
        "torch": one_line(str(torch.__version__)),
        "runtimes": runtimes,
    }

