"""Imports fine; its zoo_models hook calls sys.exit(0)."""

from __future__ import annotations

import sys
from typing import Any

from zoo import hookimpl
from zoo_test_unruly import card


@hookimpl
def zoo_models() -> list[dict[str, Any]]:
    sys.exit(0)
    return [card("never_listed", "never")]  # pragma: no cover
