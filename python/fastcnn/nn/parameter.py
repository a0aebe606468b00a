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

    def use_grad_storage(self, storage: np.ndarray) -> None:
        """Make `grad` a view of `storage`, keeping its current value.

        Data-parallel training (`fastcnn.distributed`) lays every parameter's gradient out in one contiguous float32
        buffer, so that one in-place Allreduce averages them all.

        Args:
            storage: a writeable, C-contiguous float32 array of the parameter's shape (a slice of the flat buffer).
        """
        fn = "Parameter.use_grad_storage"
        if not isinstance(storage, np.ndarray) or storage.dtype != np.float32:
            raise TypeError(f"{fn}: storage must be a float32 NumPy array; got "
                            f"{getattr(storage, 'dtype', type(storage).__name__)}")
        if storage.shape != self.data.shape:
            raise ValueError(f"{fn}: storage must have the parameter's shape {self.data.shape}; got {storage.shape}")
        if not (storage.flags.c_contiguous and storage.flags.writeable):
            raise ValueError(f"{fn}: storage must be C-contiguous and writeable; got an array of shape "
                             f"{storage.shape} with strides {storage.strides} that is "
                             + " and ".join(w for w, ok in (("not C-contiguous", storage.flags.c_contiguous),
                                                            ("read-only", storage.flags.writeable)) if not ok))
        storage[...] = self.grad
        self.grad = storage

    def __getstate__(self):
        # A pickled parameter is its value and whether it trains: the gradient (perhaps a view of a large shared
        # buffer) would only make the pickle bigger and is zero again after unpickling, as in a new parameter.
        return {"data": self.data, "requires_grad": self.requires_grad}

    def __setstate__(self, state):
        self.data = np.array(state["data"], dtype=np.float32, order="C", copy=True)
        self.grad = np.zeros_like(self.data)
        self.requires_grad = bool(state["requires_grad"])

    def accumulate(self, gradient: np.ndarray) -> None:
        """Add `gradient` to `grad` (in place) unless the parameter is frozen."""
        if self.requires_grad:
            self.grad += gradient

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}{frozen})"
