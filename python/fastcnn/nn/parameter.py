"""A trainable array: the value, its gradient, and whether training may change it."""
from __future__ import annotations

import numpy as np

__all__ = ["Parameter"]


class Parameter:
    """A float32 array that a model learns, with its gradient.

    `data` is updated in place by optimizers and by `load_state_dict`; `grad` is allocated once, with the
    parameter, accumulated into (`+=`) by backward passes, zeroed in place by `zero_grad()` and never rebound, so
    it can be a view into a larger buffer (as data-parallel training uses). Set `requires_grad = False` to freeze
    the parameter: backward passes then leave `grad` untouched and optimizers skip it.

    Args:
        data: the initial value; converted to a contiguous float32 array (copied).
        requires_grad: whether training updates it. Default: True.

    Example:
        >>> w = Parameter(np.zeros((3, 2)))
        >>> w.grad.shape, w.requires_grad
        ((3, 2), True)
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        self.data = np.array(data, dtype=np.float32, order="C", copy=True)
        self.grad = np.zeros_like(self.data)
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        self.grad[...] = 0.0

    def accumulate(self, gradient: np.ndarray) -> None:
        """Add `gradient` to `grad` (in place) unless the parameter is frozen."""
        if self.requires_grad:
            self.grad += gradient

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}{frozen})"
