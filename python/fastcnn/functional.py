"""Convolution and pooling, forward and backward, running in fastcnn's OpenMP-parallel C++ kernels.

Semantics, names and layouts follow PyTorch (`torch.nn.functional.conv2d`, `max_pool2d`, `avg_pool2d` and
`torch.ops.aten.convolution_backward`): NCHW activations, OIHW weights. Inputs may be any array-like of bool,
integer or floating values; they are converted to float32, the dtype fastcnn computes in, and outputs are
contiguous float32 arrays. Every argument is checked here before a kernel runs; NaN propagates through the
kernels as it does in PyTorch.
"""
from __future__ import annotations

import numpy as np

from . import _args, _core

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]


def _conv_operands(fn, x, weight, bias, stride, padding, dilation, groups):
    x = _args.as_float32(x, "input", fn)
    weight = _args.as_float32(weight, "weight", fn)
    bias = None if bias is None else _args.as_float32(bias, "bias", fn)
    groups = _args.check_conv_operands(fn, x, weight, bias, groups)
    stride, pads, dilation, out = _args.conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation)
    return x, weight, bias, stride, pads, dilation, groups, out


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """2-D cross-correlation of a batch of images with a bank of filters, as `torch.nn.functional.conv2d`.

    Args:
        x: input of shape (N, C_in, H, W).
        weight: filters of shape (C_out, C_in / groups, kH, kW).
        bias: optional (C_out,) added to every output position. Default: None.
        stride: int or (sH, sW), >= 1. Default: 1.
        padding: int or (pH, pW) zeros added on both sides, or 'valid' (none) or 'same' (output size equals
            input size; stride must be 1; an odd total goes to the bottom/right). Default: 0.
        dilation: int or (dH, dW) spacing between kernel taps, >= 1. Default: 1.
        groups: splits input and output channels into this many independent groups. Default: 1.

    Shape:
        output (N, C_out, H_out, W_out), H_out = floor((H + pad_top + pad_bottom - dH * (kH - 1) - 1) / sH) + 1.

    Example:
        >>> y = conv2d(np.ones((8, 3, 32, 32)), np.ones((16, 3, 3, 3)), padding=1)
        >>> y.shape
        (8, 16, 32, 32)
    """
    x, weight, bias, stride, pads, dilation, groups, _ = _conv_operands(
        "conv2d", x, weight, bias, stride, padding, dilation, groups
    )
    return _core.conv2d_forward(x, weight, bias, stride, pads, dilation, groups)


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                    output_mask=(True, True, True)):
    """Gradients of `conv2d` with respect to its input, weight and bias.

    Args:
        grad_output: gradient of the loss with respect to conv2d's output, (N, C_out, H_out, W_out).
        x, weight, stride, padding, dilation, groups: as given to `conv2d`.
        output_mask: three bools choosing which of (grad_input, grad_weight, grad_bias) to compute; a part
            that is not computed is returned as None (a first layer needs no grad_input). Default: all.

    Returns:
        (grad_input (N, C_in, H, W), grad_weight (C_out, C_in / groups, kH, kW), grad_bias (C_out,)).

    Example:
        >>> gx, gw, gb = conv2d_backward(np.ones((1, 4, 6, 6)), np.ones((1, 2, 8, 8)), np.ones((4, 2, 3, 3)))
    """
    fn = "conv2d_backward"
    x, weight, _, stride, pads, dilation, groups, out = _conv_operands(
        fn, x, weight, None, stride, padding, dilation, groups
    )
    mask = _args.output_mask3(fn, output_mask)
    grad_output = _args.as_float32(grad_output, "grad_output", fn)
    _args.check_grad_output(fn, grad_output, (x.shape[0], weight.shape[0], *out))
    return _core.conv2d_backward(grad_output, x, weight, stride, pads, dilation, groups, *mask)


def _pool_input(fn, x):
    x = _args.as_float32(x, "input", fn)
    _args.check_ndim(x, 4, "input", fn, "(N, C, H, W)")
    return x


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """Maximum over each kernel_size window of each plane, as `torch.nn.functional.max_pool2d`.

    Args:
        x: input of shape (N, C, H, W).
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW); None means kernel_size. Default: None.
        padding: int or (pH, pW), at most half the kernel; padded positions count as -inf. Default: 0.
        ceil_mode: round the output size up instead of down (a last window must start inside the input or
            the left padding). Default: False.
        return_indices: also return where each maximum came from, as flat positions h * W + w within each
            input plane (int64), for `max_pool2d_backward`. Default: False.

    Shape:
        output (N, C, H_out, W_out), H_out = floor_or_ceil((H + 2 pH - kH) / sH) + 1.
        Ties keep the first maximum in row-major order; a window holding NaN gives NaN.

    Example:
        >>> y, idx = max_pool2d(np.random.rand(2, 3, 8, 8), 2, return_indices=True)
    """
    fn = "max_pool2d"
    x = _pool_input(fn, x)
    kernel, stride, padding, _ = _args.pool_geometry(fn, x.shape, kernel_size, stride, padding, ceil_mode)
    y, indices = _core.max_pool2d_forward(x, kernel, stride, padding, bool(ceil_mode), _args.check_bool(return_indices, "return_indices", fn))
    return (y, indices) if return_indices else y


def max_pool2d_backward(grad_output, indices, input_shape) -> np.ndarray:
    """Gradient of `max_pool2d`: each output gradient goes back to the input position its index names.

    Args:
        grad_output: (N, C, H_out, W_out).
        indices: the int64 indices `max_pool2d(..., return_indices=True)` returned, same shape as grad_output;
            each must lie in [0, H * W).
        input_shape: the forward input's shape (N, C, H, W).

    Returns:
        grad_input of shape input_shape (gradients of overlapping windows add up).
    """
    fn = "max_pool2d_backward"
    grad_output = _args.as_float32(grad_output, "grad_output", fn)
    _args.check_ndim(grad_output, 4, "grad_output", fn, "(N, C, H_out, W_out)")
    shape = _args.input_shape_4d(fn, input_shape)
    if shape[:2] != grad_output.shape[:2]:
        raise ValueError(
            f"{fn}: grad_output {tuple(grad_output.shape)} and input_shape {shape} must agree on N and C"
        )
    indices = _args.as_indices(fn, indices, grad_output.shape)
    return _core.max_pool2d_backward(grad_output, indices, shape[2], shape[3])


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> np.ndarray:
    """Mean over each kernel_size window of each plane, as `torch.nn.functional.avg_pool2d`.

    Args:
        x: input of shape (N, C, H, W).
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW); None means kernel_size. Default: None.
        padding: int or (pH, pW) zeros, at most half the kernel. Default: 0.
        ceil_mode: round the output size up instead of down. Default: False.
        count_include_pad: divide by the window size including padding (but never the part of a ceil_mode
            window that hangs past the padding); False divides by the number of real pixels. Default: True.

    Shape:
        output (N, C, H_out, W_out), H_out = floor_or_ceil((H + 2 pH - kH) / sH) + 1.
    """
    fn = "avg_pool2d"
    x = _pool_input(fn, x)
    kernel, stride, padding, _ = _args.pool_geometry(fn, x.shape, kernel_size, stride, padding, ceil_mode)
    return _core.avg_pool2d_forward(x, kernel, stride, padding, bool(ceil_mode), _args.check_bool(count_include_pad, "count_include_pad", fn))


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True) -> np.ndarray:
    """Gradient of `avg_pool2d`: each output gradient, divided as the forward divided, spread over its window.

    Args:
        grad_output: (N, C, H_out, W_out), the shape avg_pool2d produced for input_shape.
        input_shape: the forward input's shape (N, C, H, W).
        kernel_size, stride, padding, ceil_mode, count_include_pad: as given to `avg_pool2d`.

    Returns:
        grad_input of shape input_shape.
    """
    fn = "avg_pool2d_backward"
    grad_output = _args.as_float32(grad_output, "grad_output", fn)
    shape = _args.input_shape_4d(fn, input_shape)
    kernel, stride, padding, out = _args.pool_geometry(fn, shape, kernel_size, stride, padding, ceil_mode)
    _args.check_grad_output(fn, grad_output, (shape[0], shape[1], *out))
    return _core.avg_pool2d_backward(
        grad_output, shape[2], shape[3], kernel, stride, padding, bool(ceil_mode), _args.check_bool(count_include_pad, "count_include_pad", fn)
    )
