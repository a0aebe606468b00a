"""Process-wide settings of the compiled kernels: thread count and memory limit."""
from __future__ import annotations

import operator

from . import _core

__all__ = ["get_num_threads", "set_num_threads", "get_memory_limit", "set_memory_limit", "simd_level"]


def _int_argument(fn: str, name: str, value, rule: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be {rule}; got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be {rule}; got {value!r}") from None


def get_num_threads() -> int:
    """Number of threads every kernel uses (initially OMP_NUM_THREADS, or the number of cores)."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use `n` threads in every later kernel call, from every Python thread (the setting is process-wide).

    Results do not depend on it: each kernel gives bitwise the same output for any thread count.
    """
    limit = _core.max_threads()
    n = _int_argument("set_num_threads", "n", n, f"an int between 1 and {limit}")
    if not 1 <= n <= limit:
        raise ValueError(f"set_num_threads: n must be between 1 and {limit}; got {n}")
    _core.set_num_threads(n)


def get_memory_limit() -> int:
    """Largest number of bytes one kernel call may allocate for its outputs and workspaces."""
    return _core.get_memory_limit()


def set_memory_limit(nbytes: int | None) -> None:
    """Bound what one kernel call may allocate; a call that would need more raises MemoryError before allocating.

    Linux overcommits memory, so an oversized allocation may "succeed" and then get the process killed; this
    bound turns that into an exception. None restores the default, half of physical memory.
    """
    if nbytes is None:
        _core.set_memory_limit(0)
        return
    nbytes = _int_argument("set_memory_limit", "nbytes", nbytes, "a positive int or None")
    if nbytes < 1 or nbytes > 2**63 - 1:
        raise ValueError(f"set_memory_limit: nbytes must be a positive int or None; got {nbytes}")
    _core.set_memory_limit(nbytes)


def simd_level() -> str:
    """The instruction set the GEMM micro-kernels chose at run time: 'avx512', 'avx2' or 'generic'."""
    return _core.simd_level()
