"""The export cache's size budget (``ZOO_CACHE_MAX``), in zoo's one size grammar."""

from __future__ import annotations

import os

from zoo.errors import UsageError
from zoo.export.cache.entries import BUDGET_ENV


def parse_size(text: str) -> int:
    """``"20G"`` -> bytes, in zoo's one size grammar (:func:`zoo._core.settings.parse_size`:
    K/M/G/T and KiB... are powers of 1024, KB/MB/GB/TB powers of 1000)."""
    from zoo._core.settings import parse_size as parse

    return parse(text)


def cache_budget() -> int | None:
    """The artifact cache's size budget from ``ZOO_CACHE_MAX`` (None when unset or empty)."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_size(text)
    except ValueError:
        from zoo._core.settings import SIZE_HELP

        raise UsageError(
            f"{BUDGET_ENV}={text[:40]!r} is not a size; use {SIZE_HELP} (e.g. "
            f"{BUDGET_ENV}=20G), or unset it for no limit"
        ) from None


def _human(n: int) -> str:
    from zoo._core.settings import format_size

    return format_size(n)
