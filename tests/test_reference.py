"""fastcnn.reference, the ground truth everything else is tested against, checked three independent ways.

1. Forward ops against naive nested-loop transcriptions written here (tiny shapes only), including PyTorch's
   ceil_mode, count_include_pad and max-pool index conventions, plus a few hand-computed examples.
2. Backward ops against central finite differences in float64.
3. All six ops against PyTorch in float64, when torch is importable.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from fastcnn import reference

# ----------------------------------------------------------------------------------------------------------------
# Naive implementations: one output element at a time, straight from the definitions (and from PyTorch's CPU
# kernels for pooling). Deliberately share no code with fastcnn.
# ----------------------------------------------------------------------------------------------------------------


def _two(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def naive_conv_pads(padding, kernel, dilation):
    """(top, bottom, left, right); 'same' puts the odd extra row/column at the bottom/right, as PyTorch does."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        total_h, total_w = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
    ph, pw = _two(padding)
    return ph, ph, pw, pw


def naive_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    n, _, height, width = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    (sh, sw), (dh, dw) = _two(stride), _two(dilation)
    top, bottom, left, right = naive_conv_pads(padding, (kh, kw), (dh, dw))
    h_out = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    w_out = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    out_per_group = c_out // groups
    out = np.zeros((n, c_out, h_out, w_out))
    for b, o, oh, ow in itertools.product(range(n), range(c_out), range(h_out), range(w_out)):
        group = o // out_per_group
        total = 0.0 if bias is None else float(bias[o])
        for c, i, j in itertools.product(range(c_per_group), range(kh), range(kw)):
            row, col = oh * sh - top + i * dh, ow * sw - left + j * dw
            if 0 <= row < height and 0 <= col < width:
                total += x[b, group * c_per_group + c, row, col] * weight[o, c, i, j]
        out[b, o, oh, ow] = total
    return out


def naive_pool_out(size, kernel, stride, padding, ceil_mode):
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # the last window must start inside input/left pad
        out -= 1
    return out


def naive_max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """PyTorch's CPU max-pool loop: scan the clipped window row-major; take `val > maxval or isnan(val)`."""
    n, c, height, width = x.shape
    (kh, kw) = _two(kernel_size)
    (sh, sw) = _two(kernel_size if stride is None else stride)
    (ph, pw) = _two(padding)
    h_out, w_out = naive_pool_out(height, kh, sh, ph, ceil_mode), naive_pool_out(width, kw, sw, pw, ceil_mode)
    out = np.zeros((n, c, h_out, w_out))
    indices = np.zeros((n, c, h_out, w_out), dtype=np.int64)
    for b, ch, oh, ow in itertools.product(range(n), range(c), range(h_out), range(w_out)):
        hstart, wstart = oh * sh - ph, ow * sw - pw
        hend, wend = min(hstart + kh, height), min(wstart + kw, width)
        hstart, wstart = max(hstart, 0), max(wstart, 0)
        max_value, max_index = -np.inf, hstart * width + wstart
        for row in range(hstart, hend):
            for col in range(wstart, wend):
                value = x[b, ch, row, col]
                if value > max_value or np.isnan(value):
                    max_value, max_index = value, row * width + col
        out[b, ch, oh, ow], indices[b, ch, oh, ow] = max_value, max_index
    return out, indices


def naive_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """PyTorch's CPU avg-pool loop: pool_size counts padding but not the ceil_mode overhang."""
    n, c, height, width = x.shape
    (kh, kw) = _two(kernel_size)
    (sh, sw) = _two(kernel_size if stride is None else stride)
    (ph, pw) = _two(padding)
    h_out, w_out = naive_pool_out(height, kh, sh, ph, ceil_mode), naive_pool_out(width, kw, sw, pw, ceil_mode)
    out = np.zeros((n, c, h_out, w_out))
    for b, ch, oh, ow in itertools.product(range(n), range(c), range(h_out), range(w_out)):
        hstart, wstart = oh * sh - ph, ow * sw - pw
        hend, wend = min(hstart + kh, height + ph), min(wstart + kw, width + pw)
        pool_size = (hend - hstart) * (wend - wstart)
        hstart, wstart, hend, wend = max(hstart, 0), max(wstart, 0), min(hend, height), min(wend, width)
        total = sum(x[b, ch, row, col] for row in range(hstart, hend) for col in range(wstart, wend))
        divisor = pool_size if count_include_pad else (hend - hstart) * (wend - wstart)
        out[b, ch, oh, ow] = total / divisor
    return out


def numerical_gradient(loss, array, eps=1e-6):
    """Central differences of the scalar loss() with respect to every element of `array` (modified in place)."""
    grad = np.zeros_like(array)
    flat, grad_flat = array.reshape(-1), grad.reshape(-1)  # views: `array` is contiguous
    for k in range(flat.size):
        original = flat[k]
        flat[k] = original + eps
        plus = loss()
        flat[k] = original - eps
        minus = loss()
        flat[k] = original
        grad_flat[k] = (plus - minus) / (2 * eps)
    return grad


# ----------------------------------------------------------------------------------------------------------------
# The grids
# ----------------------------------------------------------------------------------------------------------------
# name: (input shape, weight shape, keyword arguments)
CONV_CASES = {
    "basic": ((2, 3, 5, 5), (4, 3, 3, 3), {}),
    "stride2_pad1": ((2, 3, 7, 6), (4, 3, 3, 3), dict(stride=2, padding=1)),
    "stride_larger_than_kernel": ((2, 2, 7, 7), (2, 2, 2, 2), dict(stride=3)),
    "same_even_kernel": ((1, 2, 5, 6), (3, 2, 2, 4), dict(padding="same")),
    "same_dilated_asymmetric": ((2, 2, 6, 5), (2, 2, 3, 2), dict(padding="same", dilation=(2, 3))),
    "valid": ((1, 2, 4, 5), (3, 2, 2, 2), dict(padding="valid")),
    "dilation2": ((2, 2, 7, 7), (3, 2, 3, 3), dict(padding=1, dilation=2)),
    "groups2": ((2, 4, 5, 5), (6, 2, 3, 3), dict(padding=1, groups=2)),
    "depthwise": ((1, 4, 5, 5), (4, 1, 3, 3), dict(padding=1, groups=4)),
    "depthwise_multiplier2_strided": ((2, 3, 5, 4), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
    "rectangular": ((2, 3, 6, 7), (2, 3, 2, 3), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    "kernel_1x1": ((2, 3, 4, 5), (5, 3, 1, 1), {}),
    "kernel_1x1_strided": ((1, 2, 5, 5), (3, 2, 1, 1), dict(stride=2)),
    "kernel_equals_padded_input": ((1, 2, 3, 4), (2, 2, 5, 6), dict(padding=1)),
    "n1_c1_odd": ((1, 1, 7, 5), (1, 1, 3, 3), dict(stride=2, padding=1)),
}

# name: (input shape, kernel_size, stride, padding, ceil_mode)
POOL_CASES = {
    "k2": ((2, 3, 6, 6), 2, None, 0, False),
    "k3_s2_p1": ((2, 2, 7, 7), 3, 2, 1, False),
    "k3_s2_p1_ceil_overhang": ((2, 2, 6, 6), 3, 2, 1, True),
    "ceil_last_window_dropped": ((1, 2, 5, 5), 2, 3, 1, True),
    "ceil_no_padding_overhang": ((1, 1, 7, 6), 3, 2, 0, True),
    "overlapping": ((2, 2, 5, 5), 3, 1, 1, False),
    "rectangular": ((2, 3, 5, 7), (2, 3), (1, 2), (1, 1), False),
    "rectangular_ceil": ((1, 2, 5, 8), (3, 2), (2, 3), (1, 0), True),
    "kernel_equals_input": ((2, 2, 4, 5), (4, 5), None, 0, False),
    "kernel_equals_padded_input": ((1, 2, 3, 3), 5, 1, 1, False),
    "k1": ((2, 2, 4, 5), 1, None, 0, False),
    "k1_s2": ((1, 1, 5, 5), 1, 2, 0, False),
    "n1_c1_odd": ((1, 1, 7, 5), 3, 2, 1, False),
}


def conv_case(name, seed=0, dtype=np.float64):
    x_shape, w_shape, kwargs = CONV_CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, weight, bias, kwargs


def pool_kwargs(name):
    _, kernel_size, stride, padding, ceil_mode = POOL_CASES[name]
    return dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode)


def distinct_values(shape, seed=0):
    """A random permutation of evenly spaced values: no ties, and gaps far larger than a finite-difference step."""
    size = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(size).reshape(shape) / size - 0.5


# ----------------------------------------------------------------------------------------------------------------
# Forward ops against the naive loops
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONV_CASES)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_conv2d_matches_naive(name, with_bias):
    x, weight, bias, kwargs = conv_case(name)
    bias = bias if with_bias else None
    expected = naive_conv2d(x, weight, bias, **kwargs)
    np.testing.assert_allclose(reference.conv2d(x, weight, bias, **kwargs), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", POOL_CASES)
def test_max_pool2d_matches_naive(name):
    x = np.random.default_rng(1).standard_normal(POOL_CASES[name][0])
    out, indices = reference.max_pool2d(x, **pool_kwargs(name), return_indices=True)
    expected_out, expected_indices = naive_max_pool2d(x, **pool_kwargs(name))
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(indices, expected_indices)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(reference.max_pool2d(x, **pool_kwargs(name)), expected_out)


@pytest.mark.parametrize("name", POOL_CASES)
def test_max_pool2d_matches_naive_with_ties_nan_and_inf(name):
    """Few distinct values (many ties), scattered NaN and -inf, and one plane that is entirely -inf."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=POOL_CASES[name][0]).astype(np.float64)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.15] = -np.inf
    x[0, 0] = -np.inf
    out, indices = reference.max_pool2d(x, **pool_kwargs(name), return_indices=True)
    expected_out, expected_indices = naive_max_pool2d(x, **pool_kwargs(name))
    np.testing.assert_array_equal(out, expected_out)  # NaN positions compare equal
    np.testing.assert_array_equal(indices, expected_indices)


@pytest.mark.parametrize("name", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["include_pad", "exclude_pad"])
def test_avg_pool2d_matches_naive(name, count_include_pad):
    x = np.random.default_rng(3).standard_normal(POOL_CASES[name][0])
    out = reference.avg_pool2d(x, **pool_kwargs(name), count_include_pad=count_include_pad)
    expected = naive_avg_pool2d(x, **pool_kwargs(name), count_include_pad=count_include_pad)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)


def test_conv2d_same_even_kernel_pads_bottom_right():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    out = reference.conv2d(x, np.ones((1, 1, 2, 2)), padding="same")
    np.testing.assert_array_equal(out[0, 0], [[8, 12, 7], [20, 24, 13], [13, 15, 8]])


def test_conv2d_is_cross_correlation_not_convolution():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0
    weight = np.arange(9.0).reshape(1, 1, 3, 3)
    # A unit impulse through a cross-correlation gives the kernel back flipped.
    np.testing.assert_array_equal(reference.conv2d(x, weight, padding=1)[0, 0], weight[0, 0, ::-1, ::-1])


@pytest.mark.parametrize(
    "count_include_pad, expected", [(True, [1.0, 3.0, 5.0, 3.0]), (False, [1.5, 3.0, 5.0, 6.0])]
)
def test_avg_pool2d_ceil_mode_divisor_counts_padding_not_overhang(count_include_pad, expected):
    # Windows start at -1, 1, 3, 5 over [1..6] padded by one zero each side; the last one covers x[5], the right
    # padding and one overhanging position: its divisor is 2 (value and padding), or 1 without padding.
    x = np.arange(1.0, 7.0).reshape(1, 1, 1, 6)
    out = reference.avg_pool2d(x, (1, 3), (1, 2), (0, 1), ceil_mode=True, count_include_pad=count_include_pad)
    np.testing.assert_allclose(out[0, 0, 0], expected)


def test_max_pool2d_ties_take_the_first_occurrence():
    x = np.array([[3.0, 1.0], [3.0, 3.0]]).reshape(1, 1, 2, 2)
    out, indices = reference.max_pool2d(x, 2, return_indices=True)
    assert out[0, 0, 0, 0] == 3.0 and indices[0, 0, 0, 0] == 0


def test_max_pool2d_nan_wins_and_reports_the_last_nan():
    x = np.array([[np.nan, 5.0], [np.nan, 1.0]]).reshape(1, 1, 2, 2)
    out, indices = reference.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and indices[0, 0, 0, 0] == 2


def test_max_pool2d_all_minus_inf_window_reports_its_first_real_position():
    x = np.full((1, 1, 3, 3), -np.inf)
    out, indices = reference.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    assert np.all(out == -np.inf)
    # Windows start at -1 and 1: the first real positions are (0,0), (0,1), (1,0), (1,1), never padding.
    np.testing.assert_array_equal(indices[0, 0], [[0, 1], [3, 4]])


def test_max_pool2d_never_picks_padding_over_negative_values():
    x = -1.0 - np.arange(4.0).reshape(1, 1, 2, 2)
    out, indices = reference.max_pool2d(x, 2, stride=1, padding=1, return_indices=True)
    assert np.all(out < 0)
    np.testing.assert_array_equal(indices[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_max_pool2d_backward_accumulates_duplicate_indices():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 9.0
    out, indices = reference.max_pool2d(x, 2, stride=1, return_indices=True)
    assert np.all(indices == 4)
    grad = reference.max_pool2d_backward(np.array([1.0, 2.0, 3.0, 4.0]).reshape(out.shape), indices, x.shape)
    expected = np.zeros((1, 1, 3, 3))
    expected[0, 0, 1, 1] = 10.0
    np.testing.assert_array_equal(grad, expected)


# ----------------------------------------------------------------------------------------------------------------
# Gradients against central finite differences (float64; every op is linear or piecewise linear, so agreement is
# to rounding error)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONV_CASES)
def test_conv2d_backward_matches_finite_differences(name):
    x, weight, bias, kwargs = conv_case(name)
    projection = np.random.default_rng(4).standard_normal(reference.conv2d(x, weight, bias, **kwargs).shape)

    def loss():
        return float(np.sum(reference.conv2d(x, weight, bias, **kwargs) * projection))

    grad_input, grad_weight, grad_bias = reference.conv2d_backward(projection, x, weight, **kwargs)
    np.testing.assert_allclose(grad_input, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_weight, numerical_gradient(loss, weight), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_bias, numerical_gradient(loss, bias), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", POOL_CASES)
def test_max_pool2d_backward_matches_finite_differences(name):
    x = distinct_values(POOL_CASES[name][0])
    kwargs = pool_kwargs(name)
    out, indices = reference.max_pool2d(x, **kwargs, return_indices=True)
    projection = np.random.default_rng(5).standard_normal(out.shape)

    def loss():
        return float(np.sum(reference.max_pool2d(x, **kwargs) * projection))

    grad = reference.max_pool2d_backward(projection, indices, x.shape)
    np.testing.assert_allclose(grad, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["include_pad", "exclude_pad"])
def test_avg_pool2d_backward_matches_finite_differences(name, count_include_pad):
    x = np.random.default_rng(6).standard_normal(POOL_CASES[name][0])
    kwargs = dict(pool_kwargs(name), count_include_pad=count_include_pad)
    projection = np.random.default_rng(7).standard_normal(reference.avg_pool2d(x, **kwargs).shape)

    def loss():
        return float(np.sum(reference.avg_pool2d(x, **kwargs) * projection))

    grad = reference.avg_pool2d_backward(projection, x.shape, **kwargs)
    np.testing.assert_allclose(grad, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------------------------
# output_mask, dtypes, layouts
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", list(itertools.product([True, False], repeat=3)))
def test_conv2d_backward_output_mask(mask):
    x, weight, _, kwargs = conv_case("groups2")
    grad_output = np.random.default_rng(8).standard_normal(reference.conv2d(x, weight, **kwargs).shape)
    full = reference.conv2d_backward(grad_output, x, weight, **kwargs)
    partial = reference.conv2d_backward(grad_output, x, weight, **kwargs, output_mask=mask)
    assert len(partial) == 3
    for wanted, got, reference_part in zip(mask, partial, full):
        if wanted:
            np.testing.assert_array_equal(got, reference_part)
        else:
            assert got is None


def _run_all_ops(x):
    """Every op on a (1, 2, 4, 4) input, as {name: output}."""
    weight, grad_conv, grad_pool = np.ones((2, 2, 3, 3)), np.ones((1, 2, 2, 2)), np.ones((1, 2, 2, 2))
    out, indices = reference.max_pool2d(x, 2, return_indices=True)
    grad_input, grad_weight, grad_bias = reference.conv2d_backward(grad_conv, x, weight)
    return {
        "conv2d": reference.conv2d(x, weight, np.zeros(2)),
        "conv2d_backward.input": grad_input,
        "conv2d_backward.weight": grad_weight,
        "conv2d_backward.bias": grad_bias,
        "max_pool2d": out,
        "avg_pool2d": reference.avg_pool2d(x, 2),
        "max_pool2d_backward": reference.max_pool2d_backward(grad_pool.astype(x.dtype), indices, x.shape),
        "avg_pool2d_backward": reference.avg_pool2d_backward(grad_pool.astype(x.dtype), x.shape, 2),
    }


def test_float64_input_gives_float64_output():
    x = np.random.default_rng(9).standard_normal((1, 2, 4, 4))
    for name, out in _run_all_ops(x).items():
        assert out.dtype == np.float64, name
        assert out.flags.c_contiguous, name


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32, np.int64, np.uint8, np.bool_])
def test_other_real_dtypes_compute_in_float32(dtype):
    x = (np.random.default_rng(10).random((1, 2, 4, 4)) * 3).astype(dtype)
    expected = _run_all_ops(x.astype(np.float64))
    for name, out in _run_all_ops(x).items():
        assert out.dtype == np.float32, name
        assert out.flags.c_contiguous, name
        np.testing.assert_allclose(out, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_max_pool2d_indices_are_int64_and_python_lists_are_accepted():
    x = np.arange(16).reshape(1, 1, 4, 4).tolist()
    out, indices = reference.max_pool2d(x, 2, return_indices=True)
    assert out.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_array_equal(indices[0, 0], [[5, 7], [13, 15]])


@pytest.mark.parametrize(
    "bad_input",
    [
        np.ones((1, 1, 4, 4), dtype=np.complex128),
        np.ones((1, 1, 4, 4), dtype=object),
        np.full((1, 1, 4, 4), "a"),
        "not an array",
        [[[[1.0, 2.0], [3.0]]]],  # ragged
    ],
    ids=["complex", "object", "strings", "str", "ragged"],
)
def test_non_numeric_input_is_a_type_error(bad_input):
    with pytest.raises(TypeError, match="conv2d: input must"):
        reference.conv2d(bad_input, np.ones((1, 1, 1, 1)))
    with pytest.raises(TypeError, match="max_pool2d: input must"):
        reference.max_pool2d(bad_input, 1)
    with pytest.raises(TypeError, match="avg_pool2d: input must"):
        reference.avg_pool2d(bad_input, 1)
    with pytest.raises(TypeError, match="conv2d: weight must"):
        reference.conv2d(np.ones((1, 1, 4, 4)), bad_input)


@pytest.mark.parametrize(
    "make_view",
    [
        lambda a: a[:, :, ::2, ::2],
        lambda a: a.transpose(0, 1, 3, 2),
        lambda a: np.asfortranarray(a),
        lambda a: a[:, ::-1],
    ],
    ids=["strided", "transposed", "fortran", "reversed_channels"],
)
def test_non_contiguous_input_gives_the_same_result(make_view):
    base = np.random.default_rng(11).standard_normal((2, 2, 10, 10))
    view = make_view(base)
    copy = np.ascontiguousarray(view)
    weight = make_view(np.random.default_rng(12).standard_normal((2, 2, 6, 6)))[:, :, :3, :3]
    grad = np.random.default_rng(13).standard_normal(reference.conv2d(copy, weight).shape)
    np.testing.assert_array_equal(reference.conv2d(view, weight), reference.conv2d(copy, weight))
    pool = dict(kernel_size=3, stride=2, padding=1, return_indices=True)
    pairs = [
        (reference.conv2d_backward(grad, view, weight), reference.conv2d_backward(grad, copy, weight)),
        (reference.max_pool2d(view, **pool), reference.max_pool2d(copy, **pool)),
    ]
    for from_view, from_copy in pairs:
        for got, expected in zip(from_view, from_copy):
            np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(reference.avg_pool2d(view, 3, 2, 1), reference.avg_pool2d(copy, 3, 2, 1))
    _, indices = reference.max_pool2d(copy, 3, 2, 1, return_indices=True)
    pool_shape = indices.shape
    grad_pool = np.random.default_rng(14).standard_normal((2, 2, 2 * pool_shape[2], 2 * pool_shape[3]))[:, :, ::2, ::2]
    np.testing.assert_array_equal(
        reference.max_pool2d_backward(grad_pool, indices, copy.shape),
        reference.max_pool2d_backward(np.ascontiguousarray(grad_pool), indices, copy.shape),
    )
    np.testing.assert_array_equal(
        reference.avg_pool2d_backward(grad_pool, copy.shape, 3, 2, 1),
        reference.avg_pool2d_backward(np.ascontiguousarray(grad_pool), copy.shape, 3, 2, 1),
    )


def test_inputs_are_not_modified():
    x, weight, bias, kwargs = conv_case("stride2_pad1")
    saved = [a.copy() for a in (x, weight, bias)]
    grad = np.ones(reference.conv2d(x, weight, bias, **kwargs).shape)
    reference.conv2d_backward(grad, x, weight, **kwargs)
    out, indices = reference.max_pool2d(x, 3, 2, 1, return_indices=True)
    grad_pool, saved_grad_pool, saved_indices = np.ones(out.shape), np.ones(out.shape), indices.copy()
    reference.max_pool2d_backward(grad_pool, indices, x.shape)
    reference.avg_pool2d_backward(grad_pool, x.shape, 3, 2, 1)
    for before, after in zip(saved, (x, weight, bias)):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(grad_pool, saved_grad_pool)
    np.testing.assert_array_equal(indices, saved_indices)


# ----------------------------------------------------------------------------------------------------------------
# Errors people can act on
# ----------------------------------------------------------------------------------------------------------------
X = np.ones((2, 3, 5, 5))
W = np.ones((4, 3, 3, 3))

VALUE_ERRORS = {
    "conv2d_input_ndim": (lambda: reference.conv2d(X[0], W), r"conv2d: expected input with 4 dimensions"),
    "conv2d_weight_ndim": (lambda: reference.conv2d(X, W[0]), r"conv2d: expected weight with 4 dimensions"),
    "conv2d_channels": (lambda: reference.conv2d(np.ones((2, 4, 5, 5)), W), r"conv2d: .*C_in=3.*got \(2, 4, 5, 5\)"),
    "conv2d_groups_divide": (
        lambda: reference.conv2d(np.ones((1, 4, 5, 5)), np.ones((3, 2, 3, 3)), groups=2),
        r"conv2d: groups must divide out_channels; got groups=2",
    ),
    "conv2d_groups_zero": (lambda: reference.conv2d(X, W, groups=0), r"conv2d: groups must be a positive int"),
    "conv2d_kernel_too_large": (
        lambda: reference.conv2d(X, np.ones((4, 3, 6, 3))),
        r"conv2d: the kernel must fit in the padded input",
    ),
    "conv2d_dilated_kernel_too_large": (
        lambda: reference.conv2d(X, W, dilation=3),
        r"conv2d: the kernel must fit in the padded input.*effective 7x7",
    ),
    "conv2d_stride_zero": (lambda: reference.conv2d(X, W, stride=0), r"conv2d: stride must be an int >= 1.*got 0"),
    "conv2d_dilation_zero": (
        lambda: reference.conv2d(X, W, dilation=(1, 0)),
        r"conv2d: dilation must be an int >= 1.*got \(1, 0\)",
    ),
    "conv2d_padding_negative": (lambda: reference.conv2d(X, W, padding=-1), r"conv2d: padding must be .*got -1"),
    "conv2d_padding_triple": (lambda: reference.conv2d(X, W, padding=(1, 1, 1)), r"conv2d: padding must be"),
    "conv2d_padding_word": (lambda: reference.conv2d(X, W, padding="full"), r"conv2d: padding must be .*'full'"),
    "conv2d_same_strided": (
        lambda: reference.conv2d(X, W, stride=2, padding="same"),
        r"conv2d: padding='same' requires stride=1",
    ),
    "conv2d_bias_shape": (
        lambda: reference.conv2d(X, W, np.ones(3)),
        r"conv2d: expected bias of shape \(4,\)",
    ),
    "conv2d_empty": (lambda: reference.conv2d(np.ones((0, 3, 5, 5)), W), r"conv2d: input must not be empty"),
    "conv2d_backward_grad_shape": (
        lambda: reference.conv2d_backward(np.ones((2, 4, 3, 4)), X, W),
        r"conv2d_backward: expected grad_output of shape \(2, 4, 3, 3\).*got \(2, 4, 3, 4\)",
    ),
    "conv2d_backward_grad_ndim": (
        lambda: reference.conv2d_backward(np.ones((2, 4, 9)), X, W),
        r"conv2d_backward: expected grad_output of shape \(2, 4, 3, 3\).*got \(2, 4, 9\)",
    ),
    "conv2d_backward_mask": (
        lambda: reference.conv2d_backward(np.ones((2, 4, 3, 3)), X, W, output_mask=(True, False)),
        r"conv2d_backward: output_mask must be a sequence of three bools",
    ),
    "max_pool2d_ndim": (lambda: reference.max_pool2d(X[0], 2), r"max_pool2d: expected input with 4 dimensions"),
    "max_pool2d_padding_half": (
        lambda: reference.max_pool2d(X, 2, padding=2),
        r"max_pool2d: padding must be at most half of kernel_size",
    ),
    "max_pool2d_kernel_too_large": (lambda: reference.max_pool2d(X, 6), r"max_pool2d: kernel_size .*larger than"),
    "max_pool2d_kernel_zero": (lambda: reference.max_pool2d(X, 0), r"max_pool2d: kernel_size must be an int >= 1"),
    "max_pool2d_stride_zero": (lambda: reference.max_pool2d(X, 2, stride=0), r"max_pool2d: stride must be"),
    "avg_pool2d_ndim": (lambda: reference.avg_pool2d(X[0, 0], 2), r"avg_pool2d: expected input with 4 dimensions"),
    "avg_pool2d_padding_half": (
        lambda: reference.avg_pool2d(X, (3, 2), padding=(1, 2)),
        r"avg_pool2d: padding must be at most half of kernel_size",
    ),
    "avg_pool2d_kernel_too_large": (lambda: reference.avg_pool2d(X, (2, 8)), r"avg_pool2d: kernel_size .*larger"),
    "max_pool2d_backward_index_range": (
        lambda: reference.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.array([0, 1, 2, 25]).reshape(1, 1, 2, 2),
                                              (1, 1, 5, 5)),
        r"max_pool2d_backward: indices must lie in \[0, H\*W\) = \[0, 25\).*got 25",
    ),
    "max_pool2d_backward_negative_index": (
        lambda: reference.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), -1), (1, 1, 5, 5)),
        r"max_pool2d_backward: indices must lie in .*got -1",
    ),
    "max_pool2d_backward_index_shape": (
        lambda: reference.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 1), int), (1, 1, 5, 5)),
        r"max_pool2d_backward: expected indices of the same shape as grad_output \(1, 1, 2, 2\); got \(1, 1, 2, 1\)",
    ),
    "max_pool2d_backward_batch_mismatch": (
        lambda: reference.max_pool2d_backward(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), int), (1, 3, 5, 5)),
        r"max_pool2d_backward: grad_output \(1, 2, 2, 2\) and input_shape \(1, 3, 5, 5\) must agree on N and C",
    ),
    "max_pool2d_backward_input_shape_length": (
        lambda: reference.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), int), (1, 5, 5)),
        r"max_pool2d_backward: input_shape must be a sequence of four positive ints",
    ),
    "max_pool2d_backward_input_shape_zero": (
        lambda: reference.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), int), (1, 1, 0, 5)),
        r"max_pool2d_backward: input_shape must be .*got \(1, 1, 0, 5\)",
    ),
    "avg_pool2d_backward_grad_shape": (
        lambda: reference.avg_pool2d_backward(np.ones((2, 3, 3, 3)), X.shape, 2),
        r"avg_pool2d_backward: expected grad_output of shape \(2, 3, 2, 2\).*got \(2, 3, 3, 3\)",
    ),
    "avg_pool2d_backward_ceil_shape": (
        lambda: reference.avg_pool2d_backward(np.ones((2, 3, 2, 2)), X.shape, 2, ceil_mode=True),
        r"avg_pool2d_backward: expected grad_output of shape \(2, 3, 3, 3\)",
    ),
    "avg_pool2d_backward_input_shape": (
        lambda: reference.avg_pool2d_backward(np.ones((2, 3, 2, 2)), (2, 3, 5), 2),
        r"avg_pool2d_backward: input_shape must be",
    ),
}

TYPE_ERRORS = {
    "conv2d_float_stride": (lambda: reference.conv2d(X, W, stride=1.5), r"conv2d: stride must be .*got 1.5"),
    "conv2d_bool_groups": (lambda: reference.conv2d(X, W, groups=True), r"conv2d: groups must be a positive int"),
    "max_pool2d_ceil_mode": (lambda: reference.max_pool2d(X, 2, ceil_mode=1), r"max_pool2d: ceil_mode must be a bool"),
    "max_pool2d_return_indices": (
        lambda: reference.max_pool2d(X, 2, return_indices="yes"),
        r"max_pool2d: return_indices must be a bool",
    ),
    "avg_pool2d_count_include_pad": (
        lambda: reference.avg_pool2d(X, 2, count_include_pad=None),
        r"avg_pool2d: count_include_pad must be a bool",
    ),
    "max_pool2d_backward_float_indices": (
        lambda: reference.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), (1, 1, 4, 4)),
        r"max_pool2d_backward: indices must be an integer array.*float64",
    ),
    "max_pool2d_backward_float_input_shape": (
        lambda: reference.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), int), (1, 1, 4.0, 4)),
        r"max_pool2d_backward: input_shape must be",
    ),
    "avg_pool2d_backward_complex_grad": (
        lambda: reference.avg_pool2d_backward(np.ones((1, 1, 2, 2), complex), (1, 1, 4, 4), 2),
        r"avg_pool2d_backward: grad_output must hold .*complex",
    ),
}


@pytest.mark.parametrize("name", VALUE_ERRORS)
def test_value_errors(name):
    call, message = VALUE_ERRORS[name]
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("name", TYPE_ERRORS)
def test_type_errors(name):
    call, message = TYPE_ERRORS[name]
    with pytest.raises(TypeError, match=message):
        call()


# ----------------------------------------------------------------------------------------------------------------
# Side by side with PyTorch (float64), when it is installed
# ----------------------------------------------------------------------------------------------------------------
TORCH_CONV_CASES = ["stride2_pad1", "same_even_kernel", "same_dilated_asymmetric", "depthwise_multiplier2_strided",
                    "rectangular", "kernel_equals_padded_input"]
TORCH_POOL_CASES = ["k3_s2_p1_ceil_overhang", "ceil_last_window_dropped", "ceil_no_padding_overhang",
                    "overlapping", "rectangular_ceil", "kernel_equals_padded_input"]


@pytest.mark.parametrize("name", TORCH_CONV_CASES)
def test_conv2d_and_backward_match_torch(name):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    x, weight, bias, kwargs = conv_case(name)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    with warnings.catch_warnings():  # torch warns that 'same' with an even kernel copies the input
        warnings.simplefilter("ignore", UserWarning)
        t_out = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    grad_output = np.random.default_rng(15).standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(grad_output))

    np.testing.assert_allclose(reference.conv2d(x, weight, bias, **kwargs), t_out.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    grads = reference.conv2d_backward(grad_output, x, weight, **kwargs)
    for got, tensor in zip(grads, (tx, tw, tb)):
        np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", TORCH_POOL_CASES)
def test_max_pool2d_and_backward_match_torch(name):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    kwargs = pool_kwargs(name)
    rng = np.random.default_rng(16)
    x = rng.integers(0, 4, size=POOL_CASES[name][0]).astype(np.float64)  # ties
    x[rng.random(x.shape) < 0.1] = -np.inf
    x[0, 0] = -np.inf
    tx = torch.tensor(x, requires_grad=True)
    t_out, t_indices = torch.nn.functional.max_pool2d(tx, **kwargs, return_indices=True)
    grad_output = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(grad_output))

    out, indices = reference.max_pool2d(x, **kwargs, return_indices=True)
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    np.testing.assert_array_equal(indices, t_indices.numpy())
    np.testing.assert_allclose(reference.max_pool2d_backward(grad_output, indices, x.shape), tx.grad.numpy(),
                               rtol=1e-12, atol=0)

    x[rng.random(x.shape) < 0.2] = np.nan  # NaN: forward only (its gradient is routed the same way anyway)
    out, indices = reference.max_pool2d(x, **kwargs, return_indices=True)
    t_out, t_indices = torch.nn.functional.max_pool2d(torch.tensor(x), **kwargs, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(indices, t_indices.numpy())


@pytest.mark.parametrize("name", TORCH_POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["include_pad", "exclude_pad"])
def test_avg_pool2d_and_backward_match_torch(name, count_include_pad):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    kwargs = dict(pool_kwargs(name), count_include_pad=count_include_pad)
    x = np.random.default_rng(17).standard_normal(POOL_CASES[name][0])
    tx = torch.tensor(x, requires_grad=True)
    t_out = torch.nn.functional.avg_pool2d(tx, **kwargs)
    grad_output = np.random.default_rng(18).standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(grad_output))

    np.testing.assert_allclose(reference.avg_pool2d(x, **kwargs), t_out.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(reference.avg_pool2d_backward(grad_output, x.shape, **kwargs), tx.grad.numpy(),
                               rtol=1e-12, atol=1e-15)
