"""Interleaved timing against eager fp32, and fidelity (SQNR, argmax agreement).

Single runs on a shared machine swing by +-40 %; pairs taken back to back (eager, artifact,
eager, artifact, ...) share the machine's state, so the ratio of each pair is steadier than
either series. Both medians and the median (min-max) of the pair ratios are kept.

Each timed call starts after an untimed idle gap (:data:`SETTLE_S`): worker threads of the
call before (torch's OpenMP team spin-waits after each parallel region) would otherwise still
hold a core when the next call starts. Without it every runtime measured 15-25 % slower right
after eager PyTorch than alone (lraspp 520x520, 2 threads: LiteRT int8 24.4 vs 18.2 ms,
ExecuTorch fp32 37 vs 31.6 ms, ONNX Runtime fp32 37.5 vs 33.7 ms, eager unchanged), a cost
no app that runs one runtime pays.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.bench.record import SQNR_CAP_DB, Stats

#: idle seconds before each timed call (and warm-up call), so the previous call's threads sleep
SETTLE_S = 0.02
#: glibc ``mallopt`` parameters and the values :func:`steady_allocator` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # the cap of glibc's own dynamic threshold on 64-bit
_TRIM_THRESHOLD = 1024 * 1024 * 1024


def steady_allocator() -> bool:
    """Keep freed blocks up to 32 MiB in this process's heap (glibc ``mallopt``), so every
    call reuses memory instead of faulting in fresh pages; whether it could be set.

    glibc adapts its mmap threshold to the first large blocks a process frees, so from one
    process to the next the same eager forward either reused its buffers or mapped fresh ones
    (lraspp 520x520: 0 or ~11,500 page faults per forward, 73 vs 88 ms on the same machine,
    stable within a process). Fixed thresholds make every bench process the first kind: the
    eager baseline at its best, and runtimes that allocate their outputs too. Blocks over
    32 MiB (deeplabv3's output at 1024x1024: 88 MB) are still mapped fresh on every call."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has none worth setting)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


@dataclass(frozen=True)
class Timing:
    """Interleaved pairs: eager and candidate milliseconds, and candidate/eager ratios."""

    eager_ms: list[float]
    candidate_ms: list[float]

    @property
    def ratios(self) -> list[float]:
        return [c / e for c, e in zip(self.candidate_ms, self.eager_ms, strict=True)]


def stats(values: Sequence[float]) -> Stats:
    """Median, min and max of ``values`` (non-empty)."""
    return {"median": float(statistics.median(values)), "min": float(min(values)),
            "max": float(max(values))}


def interleaved(eager: Callable[[Any], Any], candidate: Callable[[Any], Any], x: Any,
                runs: int, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter, settle_s: float = SETTLE_S,
                sleep: Callable[[float], None] = time.sleep) -> Timing:
    """Time ``eager(x)`` and ``candidate(x)`` as ``runs`` back-to-back pairs (A B A B ...)
    after ``warmup`` untimed calls of each, without gradients, each call after ``settle_s``
    idle seconds (untimed). A zero-length measurement (a coarse clock) is counted as one
    clock tick so ratios stay finite."""
    import torch

    if runs < 1:
        raise ValueError("runs must be at least 1")
    eager_ms: list[float] = []
    candidate_ms: list[float] = []
    tick = 1e-6
    with torch.no_grad():
        for _ in range(warmup):
            for fn in (eager, candidate):
                sleep(settle_s)
                fn(x)
        for _ in range(runs):
            for fn, into in ((eager, eager_ms), (candidate, candidate_ms)):
                sleep(settle_s)
                start = clock()
                fn(x)
                into.append(max(clock() - start, tick) * 1000.0)
    return Timing(eager_ms, candidate_ms)


def sqnr_db(reference: Any, got: Any) -> float:
    """Signal-to-quantisation-noise ratio of ``got`` against ``reference`` in dB, clamped to
    +-:data:`~zoo.bench.record.SQNR_CAP_DB` (identical outputs give the cap)."""
    ref = reference.double()
    noise = float(((ref - got.double()) ** 2).sum())
    signal = float((ref**2).sum())
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    value = 10.0 * math.log10(signal / noise)
    return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, value))


def argmax_agreement(reference: Any, got: Any) -> float:
    """Share of pixels whose arg-max class (over dim 1) is the same in both outputs."""
    return float((reference.argmax(1) == got.argmax(1)).double().mean())


def fidelity(reference: Any, got: Any) -> tuple[float, float]:
    """(SQNR dB, argmax agreement) of ``got`` against ``reference`` ([N, C, H, W] logits);
    a ValueError when the shapes differ or ``got`` holds NaN/inf."""
    import torch

    if tuple(reference.shape) != tuple(got.shape):
        raise ValueError(f"output shape {list(got.shape)} differs from eager fp32's "
                         f"{list(reference.shape)}")
    got = got.float()
    if not bool(torch.isfinite(got).all()):
        raise ValueError("output holds NaN or infinite values")
    return sqnr_db(reference, got), argmax_agreement(reference, got)
