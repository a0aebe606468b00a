"""Argument checking and normalisation shared by `fastcnn.functional` and `fastcnn.reference`.

Every public op validates here, once, before any kernel runs. Messages name the function, the argument, the
rule and the value received, so that a user can act on them without reading our source.
"""
from __future__ import annotations

import operator

import numpy as np

from . import _core

__all__ = [
    "as_array",
    "as_float32",
    "pair",
    "conv_padding",
    "conv_output_size",
    "pool_output_size",
    "check_ndim",
    "check_conv_operands",
    "conv_geometry",
    "pool_geometry",
    "check_bool",
    "check_grad_output",
    "input_shape_4d",
    "output_mask3",
    "as_indices",
]


_LARGEST = 2**62  # keeps every size the C++ layer computes inside int64


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def as_array(value, name: str, fn: str, *, keep_float64: bool = False) -> np.ndarray:
    """Convert an array-like of bool, integer or floating values to a contiguous floating array.

    float32 is the dtype fastcnn computes in. `keep_float64` keeps float64 input as float64 (the reference does
    that so finite-difference checks can run in double precision); every other dtype becomes float32.
    """
    if type(value) is np.ndarray and value.dtype == np.float32 and value.flags.c_contiguous:
        return value  # already what the kernels take: the common case, kept cheap (batch-1 inference)
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be an array of numbers; got {_describe(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists and the like
        raise TypeError(f"{fn}: {name} must be an array of numbers; could not convert it: {error}") from None
    kind = array.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{fn}: {name} must hold bool, integer or floating values; got dtype {array.dtype}"
            + (" (complex numbers are not supported)" if kind == "c" else "")
        )
    dtype = np.float64 if (keep_float64 and array.dtype == np.float64) else np.float32
    _check_conversion_fits(array, dtype, name, fn)
    return np.ascontiguousarray(array, dtype=dtype)


def _check_conversion_fits(array: np.ndarray, dtype, name: str, fn: str) -> None:
    """A conversion that copies counts against the memory limit before it allocates, as the kernels' outputs do: a
    broadcast view of a few bytes can read as gigabytes."""
    if array.dtype == dtype and array.flags.c_contiguous:
        return  # no copy
    needed = array.size * np.dtype(dtype).itemsize
    limit = _core.get_memory_limit()
    if needed > limit:
        raise MemoryError(
            f"{fn}: converting {name} to a contiguous {np.dtype(dtype).name} array needs {needed} bytes, more than "
            f"fastcnn's memory limit of {limit} bytes (see fastcnn.set_memory_limit); use a smaller batch"
        )


def as_float32(value, name: str, fn: str) -> np.ndarray:
    return as_array(value, name, fn)


def _as_int(value, name: str, fn: str, rule: str) -> int:
    """An integer (Python or NumPy, never a bool or a float), or a TypeError naming the argument."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be {rule}; got {_describe(value)}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be {rule}; got {_describe(value)}") from None


def check_int(value, name: str, fn: str, *, minimum: int) -> int:
    """An integer (Python or NumPy, never a bool or a float) >= minimum: TypeError or ValueError naming the rule."""
    rule = f"an int >= {minimum}"
    number = _as_int(value, name, fn, rule)
    if number < minimum:
        raise ValueError(f"{fn}: {name} must be {rule}; got {value!r}")
    return number


def pair(value, name: str, fn: str, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least `minimum`, as a (height, width) tuple."""
    rule = f"an int >= {minimum} or a pair of ints >= {minimum}"
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be {rule}; got {value!r}")
        result = tuple(_as_int(v, name, fn, rule) for v in value)
    else:
        if isinstance(value, np.ndarray) and value.ndim == 1 and value.shape[0] == 2:
            result = tuple(_as_int(v, name, fn, rule) for v in value.tolist())
        else:
            single = _as_int(value, name, fn, rule)
            result = (single, single)
    if min(result) < minimum:
        raise ValueError(f"{fn}: {name} must be {rule}; got {value!r}")
    if max(result) > _LARGEST:
        raise ValueError(f"{fn}: {name} must be at most 2**62; got {value!r}")
    return result  # type: ignore[return-value]


def conv_padding(padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], fn: str):
    """Padding as (top, bottom, left, right); 'valid' is no padding, 'same' keeps the spatial size (stride 1).

    As in PyTorch, 'same' puts the extra row or column of an even effective kernel at the bottom/right.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(f"{fn}: padding='same' requires stride=1; got stride={stride}")
            total_h = dilation[0] * (kernel[0] - 1)
            total_w = dilation[1] * (kernel[1] - 1)
            return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        raise ValueError(f"{fn}: padding must be an int, a pair of ints, 'valid' or 'same'; got {padding!r}")
    ph, pw = pair(padding, "padding", fn, minimum=0)
    return (ph, ph, pw, pw)


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """floor((size + pads - dilation * (kernel - 1) - 1) / stride) + 1, PyTorch's formula."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape: with ceil_mode the last window must start inside the input or left padding."""
    numerator = size + 2 * padding - (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def check_ndim(array: np.ndarray, ndim: int, name: str, fn: str, layout: str) -> None:
    if array.ndim != ndim:
        raise ValueError(
            f"{fn}: expected {name} with {ndim} dimensions {layout}; got {array.ndim} dimensions, shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"{fn}: {name} must not be empty; got shape {array.shape}")


def check_conv_operands(fn: str, x: np.ndarray, weight: np.ndarray, bias, groups) -> int:
    """Shapes of x (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW) and bias (C_out,); returns groups."""
    check_ndim(weight, 4, "weight", fn, "(C_out, C_in/groups, kH, kW)")
    check_ndim(x, 4, "input", fn, "(N, C_in, H, W)")
    groups = _as_int(groups, "groups", fn, "a positive int")
    if groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int; got {groups}")
    c_out, c_in_per_group = weight.shape[0], weight.shape[1]
    if c_out % groups != 0:
        raise ValueError(
            f"{fn}: groups must divide out_channels; got groups={groups} and weight of shape {weight.shape} "
            f"(out_channels={c_out})"
        )
    if x.shape[1] != c_in_per_group * groups:
        raise ValueError(
            f"{fn}: expected input of shape (N, C_in, H, W) with C_in={c_in_per_group * groups} to match weight "
            f"{tuple(weight.shape)} and groups={groups}; got {tuple(x.shape)}"
        )
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != c_out):
        raise ValueError(f"{fn}: expected bias of shape ({c_out},) to match weight {tuple(weight.shape)}; got {bias.shape}")
    return groups


def conv_geometry(fn: str, input_shape, weight_shape, stride, padding, dilation):
    """Normalise stride/padding/dilation and compute the output size, rejecting kernels larger than the input.

    Returns (stride, pads, dilation, (H_out, W_out)) with pads as (top, bottom, left, right).
    """
    stride = pair(stride, "stride", fn, minimum=1)
    dilation = pair(dilation, "dilation", fn, minimum=1)
    kernel = (int(weight_shape[2]), int(weight_shape[3]))
    pads = conv_padding(padding, kernel, stride, dilation, fn)
    height, width = int(input_shape[2]), int(input_shape[3])
    padded = (height + pads[0] + pads[1], width + pads[2] + pads[3])
    effective = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if effective[0] > padded[0] or effective[1] > padded[1]:
        raise ValueError(
            f"{fn}: the kernel must fit in the padded input; got padded input size {padded[0]}x{padded[1]} and "
            f"kernel size {kernel[0]}x{kernel[1]} with dilation {dilation} (effective {effective[0]}x{effective[1]})"
        )
    out = (
        conv_output_size(height, kernel[0], stride[0], pads[0], pads[1], dilation[0]),
        conv_output_size(width, kernel[1], stride[1], pads[2], pads[3], dilation[1]),
    )
    return stride, pads, dilation, out


def pool_geometry(fn: str, input_shape, kernel_size, stride, padding, ceil_mode):
    """Normalise pooling arguments (stride=None means kernel_size) and compute the output size.

    Returns (kernel, stride, padding, (H_out, W_out)).
    """
    kernel = pair(kernel_size, "kernel_size", fn, minimum=1)
    stride = kernel if stride is None else pair(stride, "stride", fn, minimum=1)
    padding = pair(padding, "padding", fn, minimum=0)
    ceil_mode = check_bool(ceil_mode, "ceil_mode", fn)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ValueError(
            f"{fn}: padding must be at most half of kernel_size; got padding={padding} and kernel_size={kernel}"
        )
    height, width = int(input_shape[2]), int(input_shape[3])
    out = (
        pool_output_size(height, kernel[0], stride[0], padding[0], bool(ceil_mode)),
        pool_output_size(width, kernel[1], stride[1], padding[1], bool(ceil_mode)),
    )
    if out[0] < 1 or out[1] < 1:
        raise ValueError(
            f"{fn}: kernel_size {kernel} with padding {padding} is larger than the input plane {height}x{width}; "
            f"the output would be {out[0]}x{out[1]}"
        )
    return kernel, stride, padding, out


def check_bool(value, name: str, fn: str) -> bool:
    """A flag must be a real bool (numpy's included): 'yes', 1 or None are mistakes worth naming."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a bool; got {value!r}")
    return bool(value)


def check_grad_output(fn: str, grad_output: np.ndarray, expected_shape) -> None:
    """grad_output must have exactly the shape the forward op produced."""
    expected = tuple(int(s) for s in expected_shape)
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"{fn}: expected grad_output of shape {expected} (the forward output's shape); got {tuple(grad_output.shape)}"
        )


def input_shape_4d(fn: str, input_shape) -> tuple[int, int, int, int]:
    """A forward input's shape, given back to a backward op: four positive ints (N, C, H, W)."""
    rule = "a sequence of four positive ints (N, C, H, W)"
    try:
        values = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{fn}: input_shape must be {rule}; got {input_shape!r}") from None
    if len(values) != 4:
        raise ValueError(f"{fn}: input_shape must be {rule}; got {input_shape!r}")
    shape = tuple(_as_int(v, "input_shape", fn, rule) for v in values)
    if min(shape) < 1:
        raise ValueError(f"{fn}: input_shape must be {rule}; got {input_shape!r}")
    return shape  # type: ignore[return-value]


def output_mask3(fn: str, output_mask) -> tuple[bool, bool, bool]:
    """conv2d_backward's output_mask: three bools saying which of (grad_input, grad_weight, grad_bias) to compute."""
    try:
        values = tuple(output_mask)
    except TypeError:
        raise TypeError(f"{fn}: output_mask must be a sequence of three bools; got {output_mask!r}") from None
    if len(values) != 3 or not all(isinstance(v, (bool, np.bool_)) for v in values):
        raise ValueError(f"{fn}: output_mask must be a sequence of three bools; got {output_mask!r}")
    return tuple(bool(v) for v in values)  # type: ignore[return-value]


def as_indices(fn: str, indices, grad_output_shape) -> np.ndarray:
    """max-pool indices: an integer array shaped like grad_output, as contiguous int64."""
    array = np.asarray(indices)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices must be an integer array (as returned by max_pool2d); got dtype {array.dtype}")
    if tuple(array.shape) != tuple(grad_output_shape):
        raise ValueError(
            f"{fn}: expected indices of the same shape as grad_output {tuple(grad_output_shape)}; got {tuple(array.shape)}"
        )
    if array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{fn}: indices must lie within the input plane; got {int(array.max())}")
    return np.ascontiguousarray(array, dtype=np.int64)
