"""Whether forward passes remember what backward needs, per thread.

Training records (each layer keeps its inputs for backward); evaluation and inspection must not, so that a
feature-map view computed in another thread (the browser demo) never disturbs the training thread's caches.
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["no_grad", "is_grad_enabled", "recording", "param_grads_enabled"]

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


def param_grads_enabled() -> bool:
    """False while only an input gradient is wanted (saliency): backward then leaves every param.grad alone."""
    return getattr(_state, "param_grads", True)


def forced_recording() -> bool:
    return getattr(_state, "forced", False)


@contextlib.contextmanager
def no_grad():
    """Inside this block forward passes cache nothing, so backward cannot be called and nothing changes.

    Example:
        >>> with fastcnn.no_grad():
        ...     logits = model(x)
    """
    previous = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


@contextlib.contextmanager
def recording(param_grads: bool):
    """Record forward passes even in eval mode (for input gradients); `param_grads=False` keeps param.grad intact."""
    previous = (is_grad_enabled(), forced_recording(), param_grads_enabled())
    _state.enabled, _state.forced, _state.param_grads = True, True, param_grads
    try:
        yield
    finally:
        _state.enabled, _state.forced, _state.param_grads = previous
