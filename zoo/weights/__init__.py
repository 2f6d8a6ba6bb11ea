"""Weights: a ``--weights`` spec or a card's URLs -> a verified file on disk.

``resolve`` orders the sources (weights cache, team store, URLs, mirror), ``download`` moves
bytes over HTTP with ``watchdog`` bounding time, ``cache`` keeps them content-addressed,
``urls`` holds the URL rules. The old module ``zoo.weights`` lived where this package is: its
public names (``resolve_weights``, ``ResolvedWeights``, ``UNTRAINED``, ...) still resolve here,
imported on first use so that ``import zoo.weights.urls`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = {"cache", "download", "housekeeping", "resolve", "urls", "watchdog"}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    if name in _SUBMODULES:  # ``from zoo.weights import cache`` asks here before importing
        return importlib.import_module(f"{__name__}.{name}")
    resolve = importlib.import_module("zoo.weights.resolve")
    try:
        return getattr(resolve, name)
    except AttributeError:
        raise AttributeError(f"module 'zoo.weights' has no attribute {name!r}") from None
