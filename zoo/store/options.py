"""Compatibility home of the team store's options: the configuration lives in
:mod:`zoo.store.config`, the command-line options in :mod:`zoo.cli.store_options` (resolved on
first use, so importing this module imports no argparse)."""

from __future__ import annotations

import importlib
from typing import Any

_CLI = {"add_store_options", "store_from_args", "custody_from_args"}


def __getattr__(name: str) -> Any:
    module = "zoo.cli.store_options" if name in _CLI else "zoo.store.config"
    try:
        return getattr(importlib.import_module(module), name)
    except AttributeError:
        raise AttributeError(f"module 'zoo.store.options' has no attribute {name!r}") from None
