"""fastcnn: convolutional neural networks on the CPU, fast, from Python.

The compiled kernels live in the private module `fastcnn._core`; use them through `fastcnn.functional`.
`fastcnn.reference` holds the same ops in plain NumPy, the ground truth for tests and benchmarks.
"""
from __future__ import annotations

import importlib

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

# Submodules and functions loaded on first use: `import fastcnn` stays cheap and needs only NumPy, and
# `python -m fastcnn.datasets` does not find itself half-imported.
_LAZY_MODULES = {"augment", "bench", "callbacks", "datasets", "demo", "distributed", "io", "models", "optim", "reference",
                 "training", "viz"}
_LAZY_NAMES = {
    "fit": "training", "evaluate": "training", "predict": "training", "History": "training",
    "gradcheck": "training", "input_gradient": "training", "save": "io", "load": "io",
}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'fastcnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY_MODULES | set(_LAZY_NAMES))

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
    *sorted(_LAZY_MODULES),
    *sorted(_LAZY_NAMES),
]
