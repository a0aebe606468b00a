"""Batch normalization over channels, as torch.nn.BatchNorm1d / BatchNorm2d."""
from __future__ import annotations

import numpy as np

from .. import _args, _core, _grad_mode
from .module import Module, register_module
from .parameter import Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    layout = ""
    ndims: tuple[int, ...] = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{name}: num_features must be a positive int; got {num_features!r}")
        if not (float(eps) > 0):
            raise ValueError(f"{name}: eps must be positive; got {eps!r}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1]; got {momentum!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, np.float32))
            self.bias = Parameter(np.zeros(self.num_features, np.float32))
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        self._cache = None

    def forward(self, x):
        name = type(self).__name__
        x = _args.as_float32(x, "input", name)
        if x.ndim not in self.ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected input of shape {self.layout} with C={self.num_features}; got {x.shape}")
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            count = x.size // x.shape[1]
            if self.training and count < 2:
                raise ValueError(f"{name}: training needs more than one value per channel; got input {x.shape}")
            mean, var = _core.batch_norm_statistics(x)  # float64, two passes
            if self.training and self.track_running_stats and _grad_mode.is_grad_enabled():
                # PyTorch's update: the running variance is the unbiased batch variance
                unbiased = var * count / max(count - 1, 1)
                self._set_buffer("running_mean", (1 - self.momentum) * self.running_mean + self.momentum * mean)
                self._set_buffer("running_var", (1 - self.momentum) * self.running_var + self.momentum * unbiased)
                self._set_buffer("num_batches_tracked", self.num_batches_tracked + 1)
        else:
            mean, var = self.running_mean.astype(np.float64), self.running_var.astype(np.float64)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        weight = self.weight.data.astype(np.float64) if self.affine else 1.0
        bias = self.bias.data.astype(np.float64) if self.affine else 0.0
        # y = x * scale + shift with the normalisation folded in (PyTorch's CPU kernel does the same)
        scale = np.ascontiguousarray(inv_std * weight, dtype=np.float32)
        shift = np.ascontiguousarray(bias - mean * inv_std * weight, dtype=np.float32)
        y = _core.batch_norm_apply(x, scale, shift)
        if self._recording():
            self._cache = (x, mean.astype(np.float32), inv_std.astype(np.float32), use_batch_stats)
        return y

    def backward(self, grad_output, input_grad: bool = True):
        x, mean, inv_std, used_batch_stats = self._require_cache(self._cache)
        grad = np.ascontiguousarray(grad_output, dtype=np.float32)
        weight = self.weight.data if self.affine else np.ones(self.num_features, np.float32)
        grad_x, grad_weight, grad_bias = _core.batch_norm_backward(
            grad, x, mean, inv_std, np.ascontiguousarray(weight), used_batch_stats, input_grad)
        if self.affine:
            if self.weight.requires_grad:
                self._accumulate(self.weight, grad_weight)
            if self.bias.requires_grad:
                self._accumulate(self.bias, grad_bias)
        return grad_x

    def get_config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum, affine=self.affine,
                    track_running_stats=self.track_running_stats)


@register_module
class BatchNorm2d(_BatchNorm):
    """Normalises each channel of an (N, C, H, W) batch with its batch mean and variance (running estimates in
    eval mode), then scales and shifts it, as `torch.nn.BatchNorm2d`.

    Args:
        num_features: C.
        eps: added to the variance. Default: 1e-5.
        momentum: weight of the new batch in the running statistics. Default: 0.1.
        affine: learn a scale (weight) and shift (bias). Default: True.
        track_running_stats: keep running_mean / running_var for eval mode. Default: True.
    """

    layout = "(N, C, H, W)"
    ndims = (4,)


@register_module
class BatchNorm1d(_BatchNorm):
    """BatchNorm2d's rule for (N, C) features, as `torch.nn.BatchNorm1d`."""

    layout = "(N, C)"
    ndims = (2,)
