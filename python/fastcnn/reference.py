"""The six fastcnn ops in plain, vectorised NumPy: the ground truth for tests and the baseline for benchmarks.

Written for clarity and independently of the C++ kernels (nothing here imports `fastcnn._core` or
`fastcnn.functional`). The semantics are PyTorch's, including its CPU corner cases: 'same' padding puts the extra
row/column at the bottom/right, max pooling never picks padding and propagates NaN, average pooling's divisor counts
padding but not the overhang that ceil_mode adds.

Convolution is im2col: a strided view of every receptive field (`sliding_window_view`), copied once into a column
matrix and multiplied with the weights in one `matmul` per call (batched over groups). Pooling loops over the few
kernel positions, each step an array operation over the whole output.

Dtype rule: the ops compute in the input's floating dtype. float64 input gives float64 results (finite-difference
checks need double precision); bool, integer, float16 and float32 input computes in float32. The other operands
(weight, bias, grad_output) are converted to that dtype. Every returned array is C-contiguous.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._args import (
    as_array,
    as_indices,
    check_bool,
    check_conv_operands,
    check_grad_output,
    check_ndim,
    conv_geometry,
    input_shape_4d,
    output_mask3,
    pool_geometry,
)

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]

_INPUT_LAYOUT = "(N, C, H, W)"


# ----------------------------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------------------------
def _conv_columns(x_padded: np.ndarray, kernel, stride, dilation, out_size, groups: int) -> np.ndarray:
    """im2col: every receptive field of the padded input as a row, grouped.

    (N, C_in, Hp, Wp) -> (groups, N * H_out * W_out, C_in/groups * kH * kW), rows ordered (n, oh, ow) and columns
    (c, i, j), which matches the weight layout (C_out, C_in/groups, kH, kW) flattened per output channel.
    """
    n, c_in = x_padded.shape[:2]
    (kh, kw), (sh, sw), (dh, dw), (h_out, w_out) = kernel, stride, dilation, out_size
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    fields = sliding_window_view(x_padded, span, axis=(2, 3))  # (N, C, Hp-spanH+1, Wp-spanW+1, spanH, spanW)
    fields = fields[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :h_out, :w_out]  # (N, C, H_out, W_out, kH, kW)
    fields = fields.reshape(n, groups, c_in // groups, h_out, w_out, kh, kw)
    # (groups, N, H_out, W_out, C/groups, kH, kW): the reshape below is the one copy im2col makes.
    return fields.transpose(1, 0, 3, 4, 2, 5, 6).reshape(groups, n * h_out * w_out, (c_in // groups) * kh * kw)


def _pad(x: np.ndarray, value: float, kernel, stride, padding, out_size) -> np.ndarray:
    """x placed inside a buffer filled with `value`, large enough for every pooling window.

    Padding is `padding` on the top/left; on the bottom/right it is whatever the last window needs (ceil_mode
    windows may overhang past the padding), or at least `padding`.
    """
    n, c, h, w = x.shape
    rows = max((out_size[0] - 1) * stride[0] + kernel[0], padding[0] + h + padding[0])
    cols = max((out_size[1] - 1) * stride[1] + kernel[1], padding[1] + w + padding[1])
    buffer = np.full((n, c, rows, cols), value, dtype=x.dtype)
    buffer[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w] = x
    return buffer


def _window_slice(offset: int, stride: int, count: int) -> slice:
    """Rows (or columns) of the padded input seen at kernel offset `offset` by `count` windows `stride` apart."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _avg_pool_divisor(input_size, kernel, stride, padding, out_size, count_include_pad: bool) -> np.ndarray:
    """(H_out, W_out) divisors, PyTorch's CPU rule, built as an outer product of a row and a column vector.

    The window is [start, end) with end = min(start + k, size + pad): padding counts, the overhang added by
    ceil_mode does not. With count_include_pad=False only the real positions (clipped to [0, size)) count.
    """
    def counts(size, k, s, p, n_out):
        start = np.arange(n_out) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    rows = counts(input_size[0], kernel[0], stride[0], padding[0], out_size[0])
    cols = counts(input_size[1], kernel[1], stride[1], padding[1], out_size[1])
    return np.multiply.outer(rows, cols)


# ----------------------------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """2-D cross-correlation (PyTorch's conv2d: the kernel is not flipped) over a batch of multi-channel images.

    out[n, o, oh, ow] = bias[o] + sum over c < C_in/groups, i < kH, j < kW of
        weight[o, c, i, j] * x_padded[n, g*C_in/groups + c, oh*sH + i*dH, ow*sW + j*dW]
    where g = o // (C_out/groups) is the group of output channel o.

    Args:
        x: input of shape (N, C_in, H, W).
        weight: filters of shape (C_out, C_in/groups, kH, kW).
        bias: (C_out,) added to every output position, or None (default).
        stride: int or (sH, sW), at least 1. Default 1.
        padding: int or (pH, pW) zeros added on both sides, or 'valid' (no padding) or 'same' (output size equals
            input size; needs stride 1; for an even effective kernel the extra row/column goes bottom/right).
            Default 0.
        dilation: int or (dH, dW), spacing between kernel taps, at least 1. Default 1.
        groups: channels are split into `groups` independent convolutions; must divide C_in and C_out. Default 1.

    Shape:
        - x: (N, C_in, H, W); weight: (C_out, C_in/groups, kH, kW); bias: (C_out,)
        - output: (N, C_out, H_out, W_out), with
          H_out = floor((H + pad_top + pad_bottom - dH * (kH - 1) - 1) / sH) + 1, and likewise W_out.

    Returns a contiguous array, float64 for float64 input and float32 otherwise.

    Example:
        >>> x = np.ones((1, 1, 4, 4)); w = np.ones((2, 1, 3, 3))
        >>> conv2d(x, w, padding=1).shape
        (1, 2, 4, 4)
    """
    fn = "conv2d"
    x = as_array(x, "input", fn, keep_float64=True)
    weight = as_array(weight, "weight", fn, keep_float64=True).astype(x.dtype, copy=False)
    if bias is not None:
        bias = as_array(bias, "bias", fn, keep_float64=True).astype(x.dtype, copy=False)
    groups = check_conv_operands(fn, x, weight, bias, groups)
    stride, pads, dilation, out_size = conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation)

    n = x.shape[0]
    c_out, _, kh, kw = weight.shape
    x_padded = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    columns = _conv_columns(x_padded, (kh, kw), stride, dilation, out_size, groups)  # (G, N*P, K)
    filters = weight.reshape(groups, c_out // groups, -1).transpose(0, 2, 1)  # (G, K, C_out/G)
    out = columns @ filters  # (G, N*H_out*W_out, C_out/G)
    out = out.reshape(groups, n, out_size[0], out_size[1], c_out // groups).transpose(1, 0, 4, 2, 3)
    out = np.ascontiguousarray(out).reshape(n, c_out, out_size[0], out_size[1])
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv2d_backward(
    grad_output,
    x,
    weight,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    output_mask=(True, True, True),
):
    """Gradients of conv2d with respect to its input, weight and bias, given the gradient of its output.

    With Y = conv2d(x, weight, bias, ...) and dY = grad_output:
        grad_input = col2im(weight^T @ dY): each output gradient spread back over the receptive field it came from;
        grad_weight = dY @ im2col(x)^T, per group;
        grad_bias = dY summed over N, H_out and W_out.
    Like torch.ops.aten.convolution_backward, parts whose output_mask entry is False are not computed and come back
    as None.

    Args:
        grad_output: gradient of the loss with respect to conv2d's output, shape (N, C_out, H_out, W_out).
        x: the input conv2d was called with, (N, C_in, H, W).
        weight: the weight conv2d was called with, (C_out, C_in/groups, kH, kW).
        stride, padding, dilation, groups: as passed to conv2d.
        output_mask: three bools (grad_input, grad_weight, grad_bias). Default (True, True, True).

    Shape:
        - grad_output: (N, C_out, H_out, W_out), exactly the shape conv2d(x, weight, ...) produces
        - returns (grad_input (N, C_in, H, W), grad_weight (C_out, C_in/groups, kH, kW), grad_bias (C_out,))

    Example:
        >>> x = np.ones((1, 1, 4, 4)); w = np.ones((2, 1, 3, 3))
        >>> gx, gw, gb = conv2d_backward(np.ones((1, 2, 2, 2)), x, w)
        >>> gx.shape, gw.shape, gb.shape
        ((1, 1, 4, 4), (2, 1, 3, 3), (2,))
    """
    fn = "conv2d_backward"
    x = as_array(x, "input", fn, keep_float64=True)
    weight = as_array(weight, "weight", fn, keep_float64=True).astype(x.dtype, copy=False)
    grad_output = as_array(grad_output, "grad_output", fn, keep_float64=True).astype(x.dtype, copy=False)
    want_input, want_weight, want_bias = output_mask3(fn, output_mask)
    groups = check_conv_operands(fn, x, weight, None, groups)
    stride, pads, dilation, out_size = conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation)
    n, c_in, height, width = x.shape
    c_out, c_in_per_group, kh, kw = weight.shape
    check_grad_output(fn, grad_output, (n, c_out, *out_size))

    # dY as (groups, N*H_out*W_out, C_out/groups), the row order of the im2col columns.
    grad_rows = (
        grad_output.reshape(n, groups, c_out // groups, out_size[0], out_size[1])
        .transpose(1, 0, 3, 4, 2)
        .reshape(groups, n * out_size[0] * out_size[1], c_out // groups)
    )
    filters = weight.reshape(groups, c_out // groups, -1)  # (G, C_out/G, K)

    grad_input = grad_weight = grad_bias = None
    if want_input:
        grad_columns = grad_rows @ filters  # (G, N*P, K)
        # (kH, kW, N, G, C_in/G, H_out, W_out): one contiguous (N, C_in, H_out, W_out) block per kernel position.
        grad_columns = grad_columns.reshape(groups, n, out_size[0], out_size[1], c_in_per_group, kh, kw)
        grad_columns = np.ascontiguousarray(grad_columns.transpose(5, 6, 1, 0, 4, 2, 3)).reshape(
            kh, kw, n, c_in, out_size[0], out_size[1]
        )
        # col2im: add each kernel position's block back where it was read from, then drop the padding.
        padded = np.zeros((n, c_in, height + pads[0] + pads[1], width + pads[2] + pads[3]), dtype=x.dtype)
        for i in range(kh):
            rows = _window_slice(i * dilation[0], stride[0], out_size[0])
            for j in range(kw):
                padded[:, :, rows, _window_slice(j * dilation[1], stride[1], out_size[1])] += grad_columns[i, j]
        grad_input = np.ascontiguousarray(padded[:, :, pads[0] : pads[0] + height, pads[2] : pads[2] + width])
    if want_weight:
        x_padded = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
        columns = _conv_columns(x_padded, (kh, kw), stride, dilation, out_size, groups)  # (G, N*P, K)
        grad_weight = (grad_rows.transpose(0, 2, 1) @ columns).reshape(c_out, c_in_per_group, kh, kw)
    if want_bias:
        grad_bias = grad_output.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


# ----------------------------------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------------------------------
def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """2-D max pooling over each plane of a batch of multi-channel images, as PyTorch's CPU kernel computes it.

    Each window is scanned row-major over its real (non-padding) positions, starting from -inf and the window's
    first real position; a value is taken when it is greater than the maximum so far or is NaN. Hence: ties give
    the first occurrence, a window holding NaN gives NaN at its last NaN, a window whose values are all -inf gives
    -inf at its first real position, and padding is never chosen.

    Args:
        x: input of shape (N, C, H, W).
        kernel_size: int or (kH, kW), the window size.
        stride: int or (sH, sW). Default None, which means kernel_size.
        padding: int or (pH, pW) of implicit -inf on both sides, at most half the kernel size. Default 0.
        ceil_mode: use ceil instead of floor for the output size; the last window must still start inside the
            input or the left padding. Default False.
        return_indices: also return where each maximum came from. Default False.

    Shape:
        - x: (N, C, H, W)
        - output and indices: (N, C, H_out, W_out), with
          H_out = floor((H + 2*pH - kH) / sH) + 1 (ceil instead of floor with ceil_mode, then one less if the
          last window would start at or past H + pH), and likewise W_out.
        - indices are int64 positions h * W + w within each input plane, as PyTorch returns them.

    Example:
        >>> y, idx = max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2, return_indices=True)
        >>> y[0, 0].tolist(), idx[0, 0].tolist()
        ([[5.0, 7.0], [13.0, 15.0]], [[5, 7], [13, 15]])
    """
    fn = "max_pool2d"
    x = as_array(x, "input", fn, keep_float64=True)
    check_ndim(x, 4, "input", fn, _INPUT_LAYOUT)
    return_indices = check_bool(return_indices, "return_indices", fn)
    kernel, stride, padding, out_size = pool_geometry(fn, x.shape, kernel_size, stride, padding, ceil_mode)
    n, c, _, width = x.shape
    x_padded = _pad(x, -np.inf, kernel, stride, padding, out_size)  # -inf is never greater than the maximum

    row_starts = np.arange(out_size[0]) * stride[0] - padding[0]  # window origins in input coordinates
    col_starts = np.arange(out_size[1]) * stride[1] - padding[1]
    first_real = np.maximum(row_starts, 0)[:, None] * width + np.maximum(col_starts, 0)[None, :]

    out = np.full((n, c, *out_size), -np.inf, dtype=x.dtype)
    indices = np.empty((n, c, *out_size), dtype=np.int64)
    indices[...] = first_real
    for i in range(kernel[0]):
        rows = _window_slice(i, stride[0], out_size[0])
        for j in range(kernel[1]):
            values = x_padded[:, :, rows, _window_slice(j, stride[1], out_size[1])]
            take = (values > out) | np.isnan(values)
            position = (row_starts + i)[:, None] * width + (col_starts + j)[None, :]  # meaningless on padding
            np.copyto(out, values, where=take)
            np.copyto(indices, position, where=take)
    return (out, indices) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape) -> np.ndarray:
    """Gradient of max_pool2d with respect to its input: each output gradient goes to where its maximum came from.

    grad_input starts at zero and grad_output[n, c, oh, ow] is added at plane position indices[n, c, oh, ow];
    positions chosen by several (overlapping) windows accumulate.

    Args:
        grad_output: gradient of the loss with respect to max_pool2d's output, (N, C, H_out, W_out).
        indices: the indices max_pool2d returned, integers h * W + w within each plane, same shape as grad_output.
        input_shape: (N, C, H, W) of the pooled input.

    Shape:
        - grad_output, indices: (N, C, H_out, W_out)
        - output: input_shape, (N, C, H, W)

    Example:
        >>> y, idx = max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2, return_indices=True)
        >>> max_pool2d_backward(np.ones_like(y), idx, (1, 1, 4, 4))[0, 0, 1].tolist()
        [0.0, 1.0, 0.0, 1.0]
    """
    fn = "max_pool2d_backward"
    grad_output = as_array(grad_output, "grad_output", fn, keep_float64=True)
    check_ndim(grad_output, 4, "grad_output", fn, "(N, C, H_out, W_out)")
    n, c, height, width = input_shape_4d(fn, input_shape)
    if tuple(grad_output.shape[:2]) != (n, c):
        raise ValueError(
            f"{fn}: grad_output {tuple(grad_output.shape)} and input_shape {(n, c, height, width)} "
            "must agree on N and C"
        )
    indices = as_indices(fn, indices, grad_output.shape)
    plane = height * width
    bad = (indices < 0) | (indices >= plane)
    if bad.any():
        raise ValueError(
            f"{fn}: indices must lie in [0, H*W) = [0, {plane}) for input_shape {(n, c, height, width)}; "
            f"got {int(indices[bad].flat[0])}"
        )
    plane_offsets = (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, 1, 1)
    flat = (indices + plane_offsets).ravel()
    grad_input = np.bincount(flat, weights=grad_output.ravel(), minlength=n * c * plane)
    return grad_input.astype(grad_output.dtype, copy=False).reshape(n, c, height, width)


# ----------------------------------------------------------------------------------------------------------------
# Average pooling
# ----------------------------------------------------------------------------------------------------------------
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> np.ndarray:
    """2-D average pooling over each plane of a batch of multi-channel images, with PyTorch's CPU divisor rule.

    For output (oh, ow): hstart = oh*sH - pH, hend = min(hstart + kH, H + pH) (likewise for w). The sum runs over
    the real values of the window (clipped to the input); the divisor is (hend - hstart) * (wend - wstart), which
    counts padding but not the overhang ceil_mode adds, or, with count_include_pad=False, the number of real
    values in the window.

    Args:
        x: input of shape (N, C, H, W).
        kernel_size: int or (kH, kW), the window size.
        stride: int or (sH, sW). Default None, which means kernel_size.
        padding: int or (pH, pW) of implicit zeros on both sides, at most half the kernel size. Default 0.
        ceil_mode: use ceil instead of floor for the output size; the last window must still start inside the
            input or the left padding. Default False.
        count_include_pad: whether padding counts in the divisor. Default True.

    Shape:
        - x: (N, C, H, W)
        - output: (N, C, H_out, W_out), with H_out = floor((H + 2*pH - kH) / sH) + 1 (ceil instead of floor with
          ceil_mode, then one less if the last window would start at or past H + pH), and likewise W_out.

    Example:
        >>> avg_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0].tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    fn = "avg_pool2d"
    x = as_array(x, "input", fn, keep_float64=True)
    check_ndim(x, 4, "input", fn, _INPUT_LAYOUT)
    count_include_pad = check_bool(count_include_pad, "count_include_pad", fn)
    kernel, stride, padding, out_size = pool_geometry(fn, x.shape, kernel_size, stride, padding, ceil_mode)
    x_padded = _pad(x, 0.0, kernel, stride, padding, out_size)  # zeros: only real values add to the sum

    total = np.zeros((x.shape[0], x.shape[1], *out_size), dtype=x.dtype)
    for i in range(kernel[0]):
        rows = _window_slice(i, stride[0], out_size[0])
        for j in range(kernel[1]):
            total += x_padded[:, :, rows, _window_slice(j, stride[1], out_size[1])]
    divisor = _avg_pool_divisor(x.shape[2:], kernel, stride, padding, out_size, count_include_pad)
    total /= divisor.astype(x.dtype)
    return total


def avg_pool2d_backward(
    grad_output,
    input_shape,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
) -> np.ndarray:
    """Gradient of avg_pool2d with respect to its input.

    Each output gradient is divided by its window's divisor (see avg_pool2d) and added to every real position of
    that window; positions covered by several windows accumulate.

    Args:
        grad_output: gradient of the loss with respect to avg_pool2d's output, (N, C, H_out, W_out).
        input_shape: (N, C, H, W) of the pooled input.
        kernel_size, stride, padding, ceil_mode, count_include_pad: as passed to avg_pool2d.

    Shape:
        - grad_output: (N, C, H_out, W_out), exactly the shape avg_pool2d produces for input_shape
        - output: input_shape, (N, C, H, W)

    Example:
        >>> avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 4, 4), 2)[0, 0, 0].tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    fn = "avg_pool2d_backward"
    grad_output = as_array(grad_output, "grad_output", fn, keep_float64=True)
    input_shape = input_shape_4d(fn, input_shape)
    count_include_pad = check_bool(count_include_pad, "count_include_pad", fn)
    kernel, stride, padding, out_size = pool_geometry(fn, input_shape, kernel_size, stride, padding, ceil_mode)
    n, c, height, width = input_shape
    check_grad_output(fn, grad_output, (n, c, *out_size))

    divisor = _avg_pool_divisor((height, width), kernel, stride, padding, out_size, count_include_pad)
    share = grad_output / divisor.astype(grad_output.dtype)
    empty = np.zeros((n, c, height, width), dtype=grad_output.dtype)
    padded = _pad(empty, 0.0, kernel, stride, padding, out_size)
    for i in range(kernel[0]):
        rows = _window_slice(i, stride[0], out_size[0])
        for j in range(kernel[1]):
            padded[:, :, rows, _window_slice(j, stride[1], out_size[1])] += share
    # Gradient that landed on padding or on the ceil_mode overhang belongs to no input value: crop it away.
    return np.ascontiguousarray(padded[:, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width])
