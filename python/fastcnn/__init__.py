"""fastcnn: convolutional neural networks on the CPU, fast, from Python.

The compiled kernels live in the private module `fastcnn._core`; use them through `fastcnn.functional`.
`fastcnn.reference` holds the same ops in plain NumPy, the ground truth for tests and benchmarks.
"""
from __future__ import annotations

from . import _core, functional, nn
from ._grad_mode import is_grad_enabled, no_grad
from ._random import manual_seed
from ._runtime import (
    get_memory_limit,
    get_num_threads,
    set_memory_limit,
    set_num_threads,
    simd_level,
)

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "functional",
    "nn",
    "no_grad",
    "is_grad_enabled",
    "manual_seed",
    "get_num_threads",
    "set_num_threads",
    "get_memory_limit",
    "set_memory_limit",
    "simd_level",
]
