"""Shared timing helper for the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_seconds(fn: Callable[[Any], Any], x: Any, runs: int) -> float:
    """Median wall time of ``fn(x)`` over ``runs`` calls, after one warm-up, without grads."""
    import torch

    with torch.no_grad():
        fn(x)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(x)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)
