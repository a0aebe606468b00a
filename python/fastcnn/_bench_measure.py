"""What every section of `fastcnn.bench` measures with: warmed-up timing, output checks, ratios and progress lines.

Kept apart from `fastcnn.bench` so that the kernel, training, inference and memory sections share one definition
of "a timed call" and "a correct output" (and `fastcnn.bench` re-exports every name here).
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np

from ._bench_cases import ATOL_OF_SCALE, RTOL, WARM_UP_SECONDS


def as_arrays(output) -> tuple[np.ndarray, ...]:
    """An output (an array, a tensor, or a tuple of them) as a tuple of NumPy arrays."""
    parts = output if isinstance(output, tuple) else (output,)
    return tuple(np.asarray(part) for part in parts)


def matches_reference(output, expected) -> bool:
    """Floating outputs within RTOL and ATOL_OF_SCALE x max|expected| (NaN fails); integer outputs exactly."""
    actual, wanted = as_arrays(output), as_arrays(expected)
    if len(actual) != len(wanted):
        return False
    for a, e in zip(actual, wanted):
        if a.shape != e.shape:
            return False
        if e.dtype.kind == "f":
            scale = float(np.max(np.abs(e))) if e.size else 0.0
            if not np.allclose(a, e, rtol=RTOL, atol=ATOL_OF_SCALE * scale):
                return False
        elif not np.array_equal(a, e):
            return False
    return True


def timed_samples_ms(call: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of `repeats` calls, made after calling for at least WARM_UP_SECONDS.

    Fastcnn, PyTorch and NumPy's BLAS each keep their own thread pool, whose idle threads spin for a while after
    a call (OpenBLAS's for about 0.1 s); on a machine with few cores the calls made meanwhile by another library
    fight those spinners for the cores, and on 2 cores measured 8 ms instead of 0.02 ms. Calling for longer than
    that spin lets the timed calls start on quiet cores; it also absorbs first-touch page faults and lazy set-up.
    """
    deadline = time.perf_counter() + WARM_UP_SECONDS
    call()
    while time.perf_counter() < deadline:
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def ratio(other, fastcnn):
    """other / fastcnn, or None when either is missing: with times, above 1 means fastcnn is faster."""
    return other / fastcnn if other and fastcnn else None


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)
