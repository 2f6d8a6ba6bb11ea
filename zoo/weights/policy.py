"""How weights are fetched, as one object: sources (mirror, offline, plain http), time bounds
(stall window and minimum rate, retries, deadline), the size cap of an unpinned download, and
progress. Built once, at the edge (the CLI's options, the environment, or the Python API's
keywords), and passed whole to :func:`zoo.weights.resolve.resolve_weights`, which hands it to
the downloader. Importing this module is cheap (no requests): the CLI takes its defaults here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from zoo.errors import UsageError

DEFAULT_TIMEOUT = 30.0  # seconds: the stall window
DEFAULT_MIN_RATE = 1024  # bytes/s averaged over a --timeout window; below it, stalled
DEFAULT_RETRIES = 3
DEFAULT_DEADLINE = 3600.0  # seconds for one resolution: lock wait, attempts, retries
DEFAULT_MAX_SIZE = 4 << 30  # 4 GiB: the most an unpinned download may hold
PROGRESS_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class DownloadPolicy:
    """Every choice about fetching weights. ``None`` for ``mirror`` / ``offline`` means "the
    environment decides" (``ZOO_MIRROR``, ``ZOO_OFFLINE``); ``None`` for ``deadline`` or
    ``max_size`` means no limit. Invalid values raise :class:`~zoo.errors.UsageError`."""

    mirror: str | None = None
    offline: bool | None = None
    allow_http: bool = False
    timeout: float = DEFAULT_TIMEOUT
    min_rate: float = DEFAULT_MIN_RATE
    retries: int = DEFAULT_RETRIES
    deadline: float | None = DEFAULT_DEADLINE
    max_size: int | None = DEFAULT_MAX_SIZE
    progress: str = "auto"

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise UsageError(f"download policy: {problem}")

    @classmethod
    def of(cls, policy: DownloadPolicy | None = None, **changes: Any) -> DownloadPolicy:
        """``policy`` (default: the defaults) with ``changes`` applied; unknown names are a
        TypeError, as a misspelt keyword would be."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown download option(s): {', '.join(unknown)}")
        base = policy if policy is not None else cls()
        return replace(base, **changes) if changes else base

    def transfer_options(self, deadline: float | None) -> dict[str, Any]:
        """The keywords :func:`zoo.weights.download.download` takes for one transfer, with
        ``deadline`` the seconds left of the whole resolution."""
        return {"allow_http": self.allow_http, "timeout": self.timeout,
                "retries": self.retries, "progress": self.progress, "deadline": deadline,
                "max_size": self.max_size, "min_rate": self.min_rate}


def _problem(policy: DownloadPolicy) -> str | None:
    if policy.progress not in PROGRESS_MODES:
        return f"progress {policy.progress!r} is not one of {', '.join(PROGRESS_MODES)}"
    for name in ("timeout", "min_rate"):
        value = getattr(policy, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            return f"{name} must be a finite number > 0, not {value!r}"
    if isinstance(policy.retries, bool) or not isinstance(policy.retries, int) \
            or policy.retries < 0:
        return f"retries must be a whole number >= 0, not {policy.retries!r}"
    if policy.deadline is not None and not (
            isinstance(policy.deadline, (int, float)) and math.isfinite(policy.deadline)
            and policy.deadline > 0):
        return f"deadline must be a finite number of seconds > 0 or None, not {policy.deadline!r}"
    if policy.max_size is not None and (
            isinstance(policy.max_size, bool) or not isinstance(policy.max_size, int)
            or policy.max_size <= 0):
        return f"max_size must be a whole number of bytes > 0 or None, not {policy.max_size!r}"
    return None
