"""fastcnn's global random generator: weight initialisation and dropout draw from it unless given a seed."""
from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "default_generator", "generator_from"]

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator behind weight initialisation and dropout, as torch.manual_seed does."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int; got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def default_generator() -> np.random.Generator:
    return _generator


def generator_from(seed) -> np.random.Generator:
    """A Generator for `seed` (an int, a Generator, or None for the global one)."""
    if seed is None:
        return _generator
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, a numpy Generator or None; got {seed!r}")
    return np.random.default_rng(int(seed))
