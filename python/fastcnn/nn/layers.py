"""Layers: each is a few lines over a functional op, its forward and backward side by side.

Convolution and pooling run in the C++ kernels (`fastcnn._core`), with arguments checked once in the
constructor and the input checked on every call; nothing in the training path falls back to the reference.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _args, _core, _grad_mode, _random
from .module import Module, module_config, module_from_config, register_module
from .parameter import Parameter

__all__ = [
    "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Linear", "Dropout",
    "GlobalAvgPool2d", "Residual", "Normalize", "Identity",
]


def _positive_int(value, name: str, fn: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(value) if float(value) == int(value) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise ValueError(f"{fn}: {name} must be a positive int; got {value!r}")
    return number


def _input(x, fn: str, ndim: int, layout: str) -> np.ndarray:
    x = _args.as_float32(x, "input", fn)
    _args.check_ndim(x, ndim, "input", fn, layout)
    return x


def _uniform(shape, bound: float, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


@register_module
class Conv2d(Module):
    """2-D convolution over an NCHW batch, as `torch.nn.Conv2d` (weights OIHW, PyTorch's default initialisation).

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size: int or (kH, kW).
        stride, padding, dilation, groups: as `fastcnn.functional.conv2d`; padding may be 'same' or 'valid'.
            Defaults: 1, 0, 1, 1.
        bias: learn an additive bias per output channel. Default: True.
        seed: int or numpy Generator for the initial weights; None draws from `fastcnn.manual_seed`'s generator.

    Shape:
        input (N, C_in, H, W) -> output (N, C_out, H_out, W_out),
        H_out = floor((H + pad_top + pad_bottom - dilation * (kH - 1) - 1) / stride) + 1.

    Example:
        >>> conv = Conv2d(1, 6, 5, padding=2)
        >>> conv(np.zeros((8, 1, 28, 28))).shape
        (8, 6, 28, 28)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, seed=None):
        super().__init__()
        fn = "Conv2d"
        self.in_channels = _positive_int(in_channels, "in_channels", fn)
        self.out_channels = _positive_int(out_channels, "out_channels", fn)
        self.kernel_size = _args.pair(kernel_size, "kernel_size", fn, minimum=1)
        self.stride = _args.pair(stride, "stride", fn, minimum=1)
        self.dilation = _args.pair(dilation, "dilation", fn, minimum=1)
        self.padding = padding if isinstance(padding, str) else _args.pair(padding, "padding", fn, minimum=0)
        self._pads = _args.conv_padding(padding, self.kernel_size, self.stride, self.dilation, fn)
        self.groups = _positive_int(groups, "groups", fn)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{fn}: groups must divide in_channels and out_channels; got groups={self.groups}, "
                f"in_channels={self.in_channels}, out_channels={self.out_channels}"
            )
        rng = _random.generator_from(seed)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)), PyTorch's default
        self.weight = Parameter(_uniform((self.out_channels, fan_in // (self.kernel_size[0] * self.kernel_size[1]),
                                          *self.kernel_size), bound, rng))
        self.bias = Parameter(_uniform((self.out_channels,), bound, rng)) if bias else None
        self._cache = None

    def forward(self, x):
        x = _input(x, "Conv2d", 4, "(N, C_in, H, W)")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv2d: expected input of shape (N, C_in, H, W) with C_in={self.in_channels}; got {x.shape}"
            )
        if not self._kernel_fits(x.shape):  # the full check, for its message
            _args.conv_geometry("Conv2d", x.shape, self.weight.data.shape, self.stride, self.padding, self.dilation)
        bias = None if self.bias is None else self.bias.data
        y = _core.conv2d_forward(x, self.weight.data, bias, self.stride, self._pads, self.dilation, self.groups)
        if self._recording():
            self._cache = x
        return y

    def _kernel_fits(self, shape) -> bool:
        """Whether the dilated kernel fits the padded input: the one rule of conv_geometry that depends on the input
        (the others were checked when the layer was built); cheap, since it runs on every forward."""
        top, bottom, left, right = self._pads
        return (shape[2] + top + bottom > self.dilation[0] * (self.kernel_size[0] - 1)
                and shape[3] + left + right > self.dilation[1] * (self.kernel_size[1] - 1))

    def backward(self, grad_output, input_grad: bool = True):
        x = self._require_cache(self._cache)
        grad_output = np.ascontiguousarray(grad_output, dtype=np.float32)
        need_weight = self.weight.requires_grad and _grad_mode.param_grads_enabled()
        need_bias = self.bias is not None and self.bias.requires_grad and _grad_mode.param_grads_enabled()
        grad_x, grad_w, grad_b = _core.conv2d_backward(
            grad_output, x, self.weight.data, self.stride, self._pads, self.dilation, self.groups,
            input_grad, need_weight, need_bias,
        )
        if need_weight:
            self.weight.grad += grad_w
        if need_bias:
            self.bias.grad += grad_b
        return grad_x

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=list(self.kernel_size),
                    stride=list(self.stride), padding=self.padding if isinstance(self.padding, str) else list(self.padding),
                    dilation=list(self.dilation), groups=self.groups, bias=self.bias is not None)


class _Pool2d(Module):
    fn = ""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size = _args.pair(kernel_size, "kernel_size", self.fn, minimum=1)
        self.stride = self.kernel_size if stride is None else _args.pair(stride, "stride", self.fn, minimum=1)
        self.padding = _args.pair(padding, "padding", self.fn, minimum=0)
        self.ceil_mode = _args.check_bool(ceil_mode, "ceil_mode", self.fn)
        if 2 * self.padding[0] > self.kernel_size[0] or 2 * self.padding[1] > self.kernel_size[1]:
            raise ValueError(f"{self.fn}: padding must be at most half of kernel_size; got padding={self.padding} "
                             f"and kernel_size={self.kernel_size}")
        self._cache = None

    def _checked_input(self, x):
        x = _input(x, self.fn, 4, "(N, C, H, W)")
        # The window must fit the padded input (the arguments were checked when the layer was built); the full
        # check only runs to word the error.
        if (x.shape[2] + 2 * self.padding[0] < self.kernel_size[0]
                or x.shape[3] + 2 * self.padding[1] < self.kernel_size[1]):
            _args.pool_geometry(self.fn, x.shape, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        return x

    def get_config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride), padding=list(self.padding),
                    ceil_mode=self.ceil_mode)


@register_module
class MaxPool2d(_Pool2d):
    """Max pooling, as `torch.nn.MaxPool2d` (stride=None means kernel_size; padding counts as -inf).

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), H_out = floor_or_ceil((H + 2 pH - kH) / sH) + 1.

    Example:
        >>> MaxPool2d(2)(np.zeros((1, 6, 28, 28))).shape
        (1, 6, 14, 14)
    """

    fn = "MaxPool2d"

    def forward(self, x):
        x = self._checked_input(x)
        record = self._recording()
        y, indices = _core.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, record)
        if record:
            self._cache = (x.shape, indices)
        return y

    def backward(self, grad_output, input_grad: bool = True):
        shape, indices = self._require_cache(self._cache)
        grad_output = np.ascontiguousarray(grad_output, dtype=np.float32)
        return _core.max_pool2d_backward(grad_output, indices, shape[2], shape[3])


@register_module
class AvgPool2d(_Pool2d):
    """Average pooling, as `torch.nn.AvgPool2d`.

    Args:
        kernel_size, stride, padding, ceil_mode: as MaxPool2d.
        count_include_pad: divide by the window size including zero padding. Default: True.
    """

    fn = "AvgPool2d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = _args.check_bool(count_include_pad, "count_include_pad", self.fn)

    def forward(self, x):
        x = self._checked_input(x)
        y = _core.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                     self.count_include_pad)
        if self._recording():
            self._cache = x.shape
        return y

    def backward(self, grad_output, input_grad: bool = True):
        shape = self._require_cache(self._cache)
        grad_output = np.ascontiguousarray(grad_output, dtype=np.float32)
        return _core.avg_pool2d_backward(grad_output, shape[2], shape[3], self.kernel_size, self.stride,
                                         self.padding, self.ceil_mode, self.count_include_pad)

    def get_config(self):
        return dict(super().get_config(), count_include_pad=self.count_include_pad)


class _Elementwise(Module):
    """An activation: forward keeps what its derivative needs, backward multiplies by that derivative."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        x = _args.as_float32(x, "input", type(self).__name__)
        y, saved = self._apply(x)
        if self._recording():
            self._cache = saved
        return y

    def backward(self, grad_output, input_grad: bool = True):
        saved = self._require_cache(self._cache)
        return self._derivative_times(saved, np.asarray(grad_output, dtype=np.float32))


@register_module
class ReLU(_Elementwise):
    """max(0, x), elementwise (NaN stays NaN), on the kernels' thread pool."""

    def _apply(self, x):
        y = _core.relu_forward(x)
        return y, y  # y > 0 exactly where x > 0: the output is all backward needs

    def _derivative_times(self, y, grad):
        return _core.relu_backward(np.ascontiguousarray(grad, dtype=np.float32), y)


@register_module
class LeakyReLU(_Elementwise):
    """x where x > 0, negative_slope * x elsewhere (default 0.01), as `torch.nn.LeakyReLU`."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        slope = float(negative_slope)
        if not math.isfinite(slope):
            raise ValueError(f"LeakyReLU: negative_slope must be finite; got {negative_slope!r}")
        self.negative_slope = slope

    def _apply(self, x):
        positive = x > 0
        return np.where(positive, x, x * np.float32(self.negative_slope)), positive

    def _derivative_times(self, positive, grad):
        return np.where(positive, grad, grad * np.float32(self.negative_slope))

    def get_config(self):
        return {"negative_slope": self.negative_slope}


@register_module
class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""

    def _apply(self, x):
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
        return y, y

    def _derivative_times(self, y, grad):
        return grad * y * (1.0 - y)


@register_module
class Tanh(_Elementwise):
    """tanh(x), elementwise."""

    def _apply(self, x):
        y = np.tanh(x)
        return y, y

    def _derivative_times(self, y, grad):
        return grad * (1.0 - y * y)


@register_module
class Identity(Module):
    """Returns its input (a placeholder, e.g. for a removed classifier head)."""

    def forward(self, x):
        return _args.as_float32(x, "input", "Identity")

    def backward(self, grad_output, input_grad: bool = True):
        return grad_output


@register_module
class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), as `torch.nn.Flatten()`."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        x = _args.as_float32(x, "input", "Flatten")
        if x.ndim < 2:
            raise ValueError(f"Flatten: expected input with a batch dimension and at least one more; got {x.shape}")
        if self._recording():
            self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_output, input_grad: bool = True):
        return np.asarray(grad_output).reshape(self._require_cache(self._cache))


@register_module
class Linear(Module):
    """y = x W^T + b, as `torch.nn.Linear` (PyTorch's default initialisation).

    Args:
        in_features, out_features: sizes of each input and output row.
        bias: learn an additive bias. Default: True.
        seed: int or numpy Generator for the initial weights.

    Shape:
        (N, in_features) -> (N, out_features).
    """

    def __init__(self, in_features, out_features, bias=True, seed=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        rng = _random.generator_from(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter(_uniform((self.out_features, self.in_features), bound, rng))
        self.bias = Parameter(_uniform((self.out_features,), bound, rng)) if bias else None
        self._cache = None

    def forward(self, x):
        x = _input(x, "Linear", 2, "(N, in_features)")
        if x.shape[1] != self.in_features:
            raise ValueError(f"Linear: expected input of shape (N, {self.in_features}); got {x.shape}")
        # our GEMM rather than NumPy's BLAS: one thread pool for every layer (see csrc/matmul.h)
        y = _core.matmul(x, self.weight.data, transpose_b=True)
        if self.bias is not None:
            y += self.bias.data
        if self._recording():
            self._cache = x
        return y

    def backward(self, grad_output, input_grad: bool = True):
        x = self._require_cache(self._cache)
        grad_output = np.asarray(grad_output, dtype=np.float32)
        grad_output = np.ascontiguousarray(grad_output)
        if self.weight.requires_grad:
            self._accumulate(self.weight, _core.matmul(grad_output, x, transpose_a=True))
        if self.bias is not None and self.bias.requires_grad:
            self._accumulate(self.bias, grad_output.sum(axis=0, dtype=np.float64).astype(np.float32))
        return _core.matmul(grad_output, self.weight.data) if input_grad else None

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None)


@register_module
class Dropout(Module):
    """Zeroes each element with probability p during training and scales the rest by 1 / (1 - p).

    Args:
        p: probability of zeroing, in [0, 1). Default: 0.5.
        seed: int or numpy Generator for the masks; None uses fastcnn's global generator.
    """

    def __init__(self, p: float = 0.5, seed=None):
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1); got {p!r}")
        self.p = p
        self._seed = seed
        self._rng = _random.generator_from(seed) if seed is not None else None
        self._cache = None

    def reseed(self, seed) -> None:
        """Use a new generator for the masks (fit does this so a seeded run is reproducible)."""
        self._rng = _random.generator_from(seed)

    def forward(self, x):
        x = _args.as_float32(x, "input", "Dropout")
        if not self.training or self.p == 0.0:
            return x
        rng = self._rng if self._rng is not None else _random.default_generator()
        mask = (rng.random(x.shape, dtype=np.float32) >= self.p).astype(np.float32) / np.float32(1.0 - self.p)
        if self._recording():
            self._cache = mask
        return x * mask

    def backward(self, grad_output, input_grad: bool = True):
        if not self.training or self.p == 0.0:
            return grad_output
        return grad_output * self._require_cache(self._cache)

    def get_config(self):
        return {"p": self.p}


@register_module
class GlobalAvgPool2d(Module):
    """Mean of each channel's plane: (N, C, H, W) -> (N, C)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        x = _input(x, "GlobalAvgPool2d", 4, "(N, C, H, W)")
        if self._recording():
            self._cache = x.shape
        return x.mean(axis=(2, 3), dtype=np.float32)

    def backward(self, grad_output, input_grad: bool = True):
        n, c, h, w = self._require_cache(self._cache)
        grad = np.asarray(grad_output, dtype=np.float32) / np.float32(h * w)
        return np.ascontiguousarray(np.broadcast_to(grad[:, :, None, None], (n, c, h, w)))


@register_module
class Normalize(Module):
    """(x - mean) / std per channel: fixed preprocessing that is saved with the model.

    Args:
        mean, std: one value per channel (or a single value for all); std must be positive.
    """

    def __init__(self, mean, std):
        super().__init__()
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float32)).copy()
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float32)).copy()
        if self.mean.ndim != 1 or self.std.ndim != 1 or not np.all(np.isfinite(self.mean)):
            raise ValueError(f"Normalize: mean and std must be finite numbers or 1-D sequences; got {mean!r}, {std!r}")
        if not np.all(self.std > 0) or not np.all(np.isfinite(self.std)):
            raise ValueError(f"Normalize: std must be positive and finite; got {std!r}")

    def _per_channel(self, x, values):
        if values.size not in (1, x.shape[1]):
            raise ValueError(f"Normalize: {values.size} values given for input with {x.shape[1]} channels")
        return values.reshape(1, -1, *([1] * (x.ndim - 2)))

    def forward(self, x):
        x = _args.as_float32(x, "input", "Normalize")
        if x.ndim < 2:
            raise ValueError(f"Normalize: expected input (N, C, ...); got {x.shape}")
        return (x - self._per_channel(x, self.mean)) / self._per_channel(x, self.std)

    def backward(self, grad_output, input_grad: bool = True):
        grad = np.asarray(grad_output, dtype=np.float32)
        return grad / self._per_channel(grad, self.std)

    def get_config(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


@register_module
class Residual(Module):
    """block(x) + x: a skip connection around `block` (whose output must have x's shape), as in ResNet."""

    def __init__(self, block: Module):
        super().__init__()
        if not isinstance(block, Module):
            raise TypeError(f"Residual: block must be a Module; got {type(block).__name__}")
        self.block = block

    def forward(self, x):
        x = _args.as_float32(x, "input", "Residual")
        y = self.block(x)
        if y.shape != x.shape:
            raise ValueError(f"Residual: the block must keep the input's shape {x.shape}; it returned {y.shape}")
        return y + x

    def backward(self, grad_output, input_grad: bool = True):
        return self.block.backward(grad_output) + grad_output

    def get_config(self):
        return {"block": module_config(self.block)}

    @classmethod
    def from_config(cls, config):
        return cls(module_from_config(config["block"]))
