"""Settings grammars, written once: yes/no values, sizes, and the ``ZOO_*`` variables.

* yes/no: ``1 true yes on`` and ``0 false no off`` (any case; empty is the default). Anything
  else is an error naming the variable, never a silent guess.
* sizes: a number of bytes, or a number with a unit. ``K M G T`` and ``KiB MiB GiB TiB`` are
  powers of 1024; ``KB MB GB TB`` are powers of 1000 (as disks and clouds count); ``B`` is
  bytes. ``--max-size 500MB``, ``ZOO_CACHE_MAX=500MB`` and ``zoo cache prune --max-size 500MB``
  all mean 500,000,000 bytes.
* sizes are printed one way: powers of 1024 with one decimal (``160.5 MiB``, ``5.0 TiB``).
"""

from __future__ import annotations

import os
import re

from zoo._core.errors import UsageError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

#: every environment variable zoo reads, with what it means
VARIABLES = {
    "ZOO_HOME": "cache root (weights, exports, compiled registry)",
    "ZOO_REGISTRY": "extra registry files",
    "ZOO_MIRROR": "a mirror base URL for card weights",
    "ZOO_OFFLINE": "yes/no: use the cache only",
    "ZOO_CACHE_MAX": "size budget of the export cache",
    "ZOO_STORE": "the team store URL",
    "ZOO_TRUSTED_KEYS": "trusted public keys",
    "ZOO_REQUIRE_SIGNED": "yes/no: install only artifacts signed by a trusted key",
    "ZOO_KEY_PASSPHRASE": "passphrase of an encrypted signing key",
}

_UNITS = {"": 1, "b": 1,
          "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*$")
MAX_SIZE = 1 << 62
SIZE_HELP = ("bytes, or a number with K/M/G/T or KiB/MiB/GiB/TiB (powers of 1024) or "
             "KB/MB/GB/TB (powers of 1000), e.g. 500MB or 8GiB")


def parse_bool(text: str, default: bool = False) -> bool:
    """``text`` as yes/no (see the module's grammar); ValueError for anything else."""
    value = text.strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{text[:40]!r} is not a yes/no value")


def env_bool(name: str, default: bool = False, *, meaning: str = "") -> bool:
    """Environment variable ``name`` as yes/no; a :class:`UsageError` naming it otherwise."""
    raw = os.environ.get(name, "")
    try:
        return parse_bool(raw, default)
    except ValueError:
        what = f" ({meaning})" if meaning else ""
        raise UsageError(f"{name}={raw[:40]!r} is not a yes/no value{what}: set it to 1, true, "
                         "yes or on; or to 0, false, no, off or empty (or unset it)") from None


def parse_size(text: str) -> int:
    """``'4GiB'`` -> 4294967296, ``'500MB'`` -> 500000000, ``'20G'`` -> 21474836480;
    ValueError naming the grammar for anything else."""
    match = _SIZE.match(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text[:40]!r} is not a size: write {SIZE_HELP}")
    value = float(match.group(1)) * unit
    if value >= MAX_SIZE:
        raise ValueError(f"{text[:40]!r} is too large")
    return int(value)


def format_size(n: int | None) -> str:
    """168312177 -> '160.5 MiB'; 5 TiB -> '5.0 TiB'; None -> '-'."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    return f"{value:.1f} TiB"  # unreachable


def counted(n: int, noun: str) -> str:
    """``counted(1, "bench record")`` -> '1 bench record'; 2 -> '2 bench records'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_count(n: int | None) -> str:
    """42004074 -> '42.0M'; 644 -> '644'; None -> '-' (parameter and class counts)."""
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
