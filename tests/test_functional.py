"""The C++ kernels (through fastcnn.functional) against the NumPy reference, over a grid that includes the edges."""
import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from fastcnn import reference as R


def close(actual, expected, scale=1.0):
    """float32 kernels against the float64 reference: error relative to the size of the terms summed."""
    assert actual.dtype == np.float32
    assert actual.flags.c_contiguous
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual)), "a kernel left an element unwritten (NaN) or overflowed"
    tolerance = 2e-5 * max(1.0, scale)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=tolerance)


# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups, bias)
CONV_CASES = [
    (1, 1, 5, 5, 1, 3, 1, 0, 1, 1, False),                # N=1, C=1
    (2, 3, 7, 9, 4, 3, 1, 1, 1, 1, True),                 # odd, non-square
    (2, 3, 8, 8, 5, 1, 1, 0, 1, 1, True),                 # 1x1 (pointwise path)
    (2, 4, 8, 8, 6, 1, 2, 0, 1, 1, False),                # 1x1 strided
    (3, 2, 9, 7, 3, (2, 3), 1, 0, 1, 1, True),            # rectangular kernel
    (2, 3, 5, 5, 2, 5, 1, 0, 1, 1, True),                 # kernel equal to the input
    (2, 3, 3, 3, 2, 5, 1, 1, 1, 1, True),                 # kernel equal to the padded input
    (2, 3, 11, 10, 4, 3, 2, 1, 1, 1, True),               # stride 2
    (2, 2, 13, 12, 3, 3, (3, 2), (2, 1), 1, 1, False),    # mixed stride and padding
    (2, 3, 12, 12, 4, 3, 1, 2, 2, 1, True),               # dilation 2
    (1, 2, 14, 11, 2, 3, 2, 1, (2, 3), 1, True),          # dilation and stride
    (2, 4, 8, 8, 6, 3, 1, 1, 1, 2, True),                 # groups 2
    (2, 6, 9, 9, 6, 3, 1, 1, 1, 6, True),                 # depthwise
    (2, 4, 9, 9, 8, 3, 1, 1, 1, 4, False),                # depthwise multiplier 2
    (2, 3, 9, 8, 4, 4, 1, "same", 1, 1, True),            # 'same' with an even kernel: asymmetric padding
    (2, 3, 9, 8, 4, 3, 1, "same", 2, 1, True),            # 'same' with dilation
    (2, 3, 9, 8, 4, 3, 1, "valid", 1, 1, True),
    (5, 7, 20, 20, 33, 3, 1, 1, 1, 1, True),              # sizes that leave partial GEMM tiles everywhere
    (3, 40, 12, 12, 20, 3, 1, 1, 1, 1, True),             # K spans several GEMM K-blocks
    # many channels on small planes: the implicit GEMM's vectors run along channels
    (3, 16, 8, 8, 32, 3, 1, 1, 1, 1, True),               # whole pixel tiles and channel panels
    (2, 32, 8, 8, 48, 3, 1, 1, 1, 1, False),              # a half-width last channel panel
    (2, 16, 19, 19, 32, 5, 1, 0, 1, 1, True),             # a short last pixel tile: rows of 15 = 8 + 7
    (2, 32, 20, 20, 32, 3, 1, 0, 2, 1, True),             # dilation
    (2, 64, 8, 8, 64, 3, 1, 1, 1, 2, True),               # groups
    (2, 15, 8, 8, 44, 3, 1, 1, 1, 1, True),               # a partial channel vector; 135 taps: a short tap tile
    (3, 4, 16, 32, 8, 3, 1, 1, 1, 1, True),               # W_out = 32: whole-row tiles; grad_output read in place
    # ... with an output (19 MB) too large for the L2 caches: streamed past them; 36 channels leave a short panel
    (64, 3, 32, 64, 36, 3, 1, 1, 1, 1, True),
    (1, 16, 70, 70, 9, 3, 1, 1, 1, 1, True),              # several im2col column blocks
    # 3x3 with 32 channels or more both ways: Winograd's F(2x2, 3x3), forward and input gradient
    (3, 32, 9, 7, 40, 3, 1, 1, 1, 1, True),               # odd output sizes: partial tiles; a partial channel vector
    (2, 48, 6, 5, 32, 3, 1, 0, 1, 1, False),              # no padding
    (2, 144, 6, 6, 36, 3, 1, 2, 1, 1, True),              # 144 channels: two GEMM K blocks; padding 2
    (2, 32, 7, 10, 33, 3, 1, (2, 1), 1, 1, True),         # unequal paddings
    (1, 32, 3, 3, 32, 3, 1, 1, 1, 1, True),               # a plane smaller than two tiles
    (5, 32, 20, 20, 32, 3, 1, "same", 1, 1, True),        # blocks of tile rows across images
    # many samples with small planes: GEMM blocks that span several whole samples
    (40, 3, 7, 6, 5, 3, 1, 1, 1, 1, True),
    (37, 4, 9, 9, 6, 3, 2, 0, 1, 2, True),                # ... with groups and stride
    (35, 6, 5, 5, 7, 1, 1, 0, 1, 1, True),                # ... pointwise
    (33, 3, 12, 10, 4, 5, 1, 0, 1, 1, False),             # ... LeNet-like 5x5
    # input gradients whose transposed geometry pads grad_output by most of the kernel: taps on padding rows skipped
    (2, 20, 11, 13, 5, (5, 3), 1, 0, (2, 1), 1, False),  # 20 channels: a short last panel; dilation; 3 dy rows
    (2, 3, 6, 32, 4, 3, 1, 0, 1, 1, True),                # W_in = 32: whole-row tiles, each with its own taps
    (1, 2, 9, 40, 3, 2, 1, 0, (8, 1), 1, False),          # dx rows 1-7 reach no dy row at all
]


def conv_arrays(rng, case):
    n, c_in, h, w, c_out, k, stride, padding, dilation, groups, bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, kh, kw)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) if bias else None
    return x, weight, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv2d_forward_and_backward_match_reference(rng, case):
    x, weight, bias, kw = conv_arrays(rng, case)
    y = F.conv2d(x, weight, bias, **kw)
    expected = R.conv2d(x.astype(np.float64), weight.astype(np.float64),
                        None if bias is None else bias.astype(np.float64), **kw)
    fan_in = weight[0].size
    close(y, expected, scale=np.sqrt(fan_in))

    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(dy, x, weight, **kw)
    rx, rw, rb = R.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), weight.astype(np.float64), **kw)
    close(gx, rx, scale=np.sqrt(weight.shape[0] * weight[0, 0].size))
    close(gw, rw, scale=np.sqrt(dy.size / dy.shape[1]))
    close(gb, rb, scale=np.sqrt(dy.size / dy.shape[1]))


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True), (False, True, True)])
def test_conv2d_backward_output_mask_skips_parts(rng, mask):
    x, weight, _, kw = conv_arrays(rng, (2, 3, 6, 6, 4, 3, 1, 1, 1, 1, True))
    dy = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    full = F.conv2d_backward(dy, x, weight, **kw)
    parts = F.conv2d_backward(dy, x, weight, output_mask=mask, **kw)
    for wanted, part, reference in zip(mask, parts, full):
        if wanted:
            np.testing.assert_array_equal(part, reference)
        else:
            assert part is None


def test_inputs_of_other_dtypes_and_layouts_are_converted(rng):
    x64 = rng.standard_normal((2, 3, 9, 8))
    w64 = rng.standard_normal((4, 3, 3, 3))
    expected = F.conv2d(x64.astype(np.float32), w64.astype(np.float32), padding=1)
    np.testing.assert_array_equal(F.conv2d(x64, w64, padding=1), expected)  # float64 input -> float32 result
    # a non-contiguous view (transposed twice) gives the same result as its contiguous copy
    view = np.ascontiguousarray(x64.astype(np.float32).transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(F.conv2d(view, w64.astype(np.float32), padding=1), expected)
    strided = rng.standard_normal((2, 3, 18, 16)).astype(np.float32)[:, :, ::2, ::2]
    np.testing.assert_array_equal(F.conv2d(strided, w64, padding=1), F.conv2d(strided.copy(), w64, padding=1))
    ints = rng.integers(-3, 4, (1, 3, 6, 6))
    np.testing.assert_allclose(F.conv2d(ints, w64), R.conv2d(ints.astype(np.float64), w64), rtol=1e-5, atol=1e-4)
    booleans = rng.random((1, 3, 6, 6)) > 0.5
    assert F.max_pool2d(booleans, 2).dtype == np.float32
    nested = [[[[1, 2], [3, 4]]]]
    np.testing.assert_array_equal(F.avg_pool2d(nested, 2), [[[[2.5]]]])


# (N, C, H, W, kernel, stride, padding, ceil_mode, count_include_pad)
POOL_CASES = [
    (1, 1, 4, 4, 2, None, 0, False, True),
    (2, 3, 7, 9, 2, None, 0, False, True),     # odd sizes: the last row/column is dropped
    (2, 3, 7, 9, 2, None, 0, True, True),      # ...or kept with ceil_mode
    (2, 2, 8, 8, 3, 2, 1, False, True),        # overlapping windows with padding
    (2, 2, 8, 8, 3, 2, 1, False, False),       # count_include_pad=False
    (2, 2, 9, 10, 3, 2, 1, True, True),        # ceil_mode with padding: windows hang past the padding
    (2, 2, 9, 10, 3, 2, 1, True, False),
    (1, 2, 6, 7, (2, 3), (1, 2), (1, 1), False, True),  # rectangular everything
    (2, 2, 5, 5, 5, None, 0, False, True),     # kernel equal to the input
    (2, 2, 5, 5, 4, 3, 2, True, False),        # padding exactly half the kernel
    (1, 3, 6, 6, 1, 1, 0, False, True),        # 1x1 window is the identity
    (2, 3, 13, 11, 3, 1, 1, True, True),       # stride 1
    (2, 2, 16, 24, 2, 2, 0, False, True),      # 2x2 fast paths: whole vectors of windows
    (2, 3, 17, 21, 2, None, 0, False, True),   # ...with a vector tail and an uncovered last row and column
    (2, 3, 17, 21, 2, None, 0, True, False),   # ...and overhanging ceil_mode windows left to the general loop
]


def pool_kwargs(case):
    _, _, _, _, kernel, stride, padding, ceil_mode, count_include_pad = case
    return dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode), count_include_pad


@pytest.mark.parametrize("case", POOL_CASES, ids=[str(c) for c in POOL_CASES])
def test_max_pool2d_matches_reference(rng, case):
    n, c, h, w = case[:4]
    kw, _ = pool_kwargs(case)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)  # continuous values: no ties
    y, indices = F.max_pool2d(x, return_indices=True, **kw)
    ry, rindices = R.max_pool2d(x, return_indices=True, **kw)
    np.testing.assert_array_equal(y, ry)  # a maximum is one of the inputs: exact
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, rindices)
    np.testing.assert_array_equal(F.max_pool2d(x, **kw), y)

    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx = F.max_pool2d_backward(dy, indices, x.shape)
    close(gx, R.max_pool2d_backward(dy.astype(np.float64), rindices, x.shape))


@pytest.mark.parametrize("case", POOL_CASES, ids=[str(c) for c in POOL_CASES])
def test_avg_pool2d_matches_reference(rng, case):
    n, c, h, w = case[:4]
    kw, include = pool_kwargs(case)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y = F.avg_pool2d(x, count_include_pad=include, **kw)
    close(y, R.avg_pool2d(x.astype(np.float64), count_include_pad=include, **kw))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx = F.avg_pool2d_backward(dy, x.shape, count_include_pad=include, **kw)
    close(gx, R.avg_pool2d_backward(dy.astype(np.float64), x.shape, count_include_pad=include, **kw))


def test_max_pool2d_ties_nan_and_infinity_follow_pytorch():
    x = np.array([[[[1.0, 5.0, 5.0, 0.0],
                    [5.0, 2.0, np.nan, 1.0],
                    [-np.inf, -np.inf, 3.0, np.nan],
                    [-np.inf, -np.inf, np.nan, 2.0]]]], dtype=np.float32)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, [[[[5.0, np.nan], [-np.inf, np.nan]]]])
    # ties keep the first maximum; NaN wins and the last NaN's index is kept; an all -inf window points at its
    # first pixel, never at padding
    np.testing.assert_array_equal(indices, [[[[1, 6], [8, 14]]]])
    ry, rindices = R.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(indices, rindices)
    padded, padded_indices = F.max_pool2d(np.full((1, 1, 3, 3), -np.inf, np.float32), 2, padding=1,
                                          return_indices=True)
    assert np.all(padded == -np.inf)
    np.testing.assert_array_equal(padded_indices, [[[[0, 1], [3, 4]]]])


@pytest.mark.parametrize("width", [8, 17, 32])
def test_max_pool2d_2x2_fast_path_keeps_pytorch_rules_for_ties_nan_and_infinity(rng, width):
    """2x2 stride-2 windows take a vectorised path; its choices must be the generic path's, value and index."""
    x = rng.integers(0, 3, (2, 3, 10, width)).astype(np.float32)  # small integers: many ties
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[0, 0, :2, :4] = -np.inf  # whole windows of -inf
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    ry, rindices = R.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(indices, rindices)
    ceil_y, ceil_indices = F.max_pool2d(x[:, :, :9, :], 2, ceil_mode=True, return_indices=True)
    ref_y, ref_indices = R.max_pool2d(x[:, :, :9, :], 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(ceil_y, ref_y)
    np.testing.assert_array_equal(ceil_indices, ref_indices)


def test_nan_propagates_through_conv_and_avg_pool(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    y = F.conv2d(x, np.ones((1, 2, 3, 3), np.float32))
    assert np.isnan(y[0, 0, 0:3, 1:4]).all() and np.isfinite(y[0, 0, 3:, :]).all()
    pooled = F.avg_pool2d(x, 2)
    assert np.isnan(pooled[0, 1, 1, 1]) and np.isfinite(pooled[0, 0]).all()


# Stride-1 geometries take the implicit-GEMM path, whose wrapped columns multiply real inputs by zero and whose
# padded grad_output multiplies weights by zero: with infinities that would make NaN where the true gradient has
# none. (N, C_in, H, W, C_out, kernel, padding, dilation, groups)
NON_FINITE_CASES = [
    (2, 3, 7, 9, 4, 3, 0, 1, 1),
    (2, 8, 9, 8, 8, 5, 2, 1, 1),
    (2, 8, 10, 10, 8, 3, 2, 2, 2),
    (2, 4, 16, 16, 8, 3, 1, 1, 1),  # W_out a whole number of vectors: grad_output read in place
]


def same_specials(actual, expected):
    """NaN and infinities in the same places with the same signs; the finite rest close."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", NON_FINITE_CASES)
def test_non_finite_values_reach_the_gradients_exactly_where_the_reference_puts_them(rng, case):
    n, c_in, h, w, c_out, k, padding, dilation, groups = case
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32)
    x[0, 0, 0, w - 1] = np.inf  # the last column: what wrapped columns of the row above would read
    x[1, -1, h - 1, 0] = np.nan
    x[0, 1, h // 2, w - 2] = -np.inf
    weight[0, 0, 0, 0] = np.inf  # meets the zeros of the padding in the input gradient
    weight[-1, -1, -1, -1] = -np.inf
    kwargs = dict(padding=padding, dilation=dilation, groups=groups)
    y = F.conv2d(x, weight, **kwargs)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    got = F.conv2d_backward(grad, x, weight, **kwargs)
    expected = R.conv2d_backward(grad.astype(np.float64), x.astype(np.float64), weight.astype(np.float64), **kwargs)
    with np.errstate(invalid="ignore"):
        for actual, reference in zip(got, expected):
            same_specials(actual, reference)


@pytest.mark.parametrize("case", [(4, 6, 14, 14, 16, 5, 0), (2, 3, 6, 32, 4, 3, 0), (2, 20, 11, 13, 5, 3, 0)])
def test_input_gradients_that_skip_padding_taps_keep_infinities_and_nan_where_the_reference_puts_them(rng, case):
    """The input gradient skips the taps whose products are all with grad_output's padding: a NaN or infinity in a
    real grad_output row must still reach every input pixel the reference puts it in, and no other."""
    n, c_in, h, w, c_out, k, padding = case
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
    grad = rng.standard_normal(F.conv2d(x, weight, padding=padding).shape).astype(np.float32)
    grad[0, 0, 0, 0] = np.inf  # the first and last real rows: their taps sit next to skipped ones
    grad[-1, -1, -1, -1] = np.nan
    grad[0, -1, -1, 0] = -np.inf
    got = F.conv2d_backward(grad, x, weight, padding=padding, output_mask=(True, False, False))[0]
    with np.errstate(invalid="ignore"):
        expected = R.conv2d_backward(grad.astype(np.float64), x.astype(np.float64), weight.astype(np.float64),
                                     padding=padding)[0]
        same_specials(got, expected)


@pytest.mark.parametrize("case", [(2, 32, 7, 9, 40, 1), (2, 48, 8, 8, 32, 0)])
def test_winograd_layers_keep_infinities_and_nan_where_the_reference_puts_them(rng, case):
    """3x3 layers with many channels take Winograd's algorithm, whose transforms mix all of a tile's values: an
    infinity or NaN in the input or in grad_output must still reach exactly the outputs and gradients the reference
    puts it in (those calls take the direct paths)."""
    n, c_in, h, w, c_out, padding = case
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    special_x = x.copy()
    special_x[0, 0, 0, w - 1] = np.inf
    special_x[1, -1, h - 1, 0] = np.nan
    special_x[0, 1, h // 2, w - 2] = -np.inf
    y = F.conv2d(x, weight, padding=padding)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    special_grad = grad.copy()
    special_grad[0, 0, 0, 0] = np.inf
    special_grad[1, -1, -1, -1] = np.nan
    for x_used, grad_used in ((special_x, grad), (x, special_grad)):
        got = (F.conv2d(x_used, weight, padding=padding),) + F.conv2d_backward(grad_used, x_used, weight,
                                                                                padding=padding)
        with np.errstate(invalid="ignore"):
            expected = (R.conv2d(x_used.astype(np.float64), weight.astype(np.float64), padding=padding),) + \
                R.conv2d_backward(grad_used.astype(np.float64), x_used.astype(np.float64), weight.astype(np.float64),
                                  padding=padding)
            for actual, reference in zip(got, expected):
                same_specials(actual, reference)


def test_winograd_layers_never_turn_finite_results_into_nan_near_the_float_range():
    """A transform adds four inputs: +-1.8e38 values overflow there although every sum of the direct convolution is
    finite (one nonzero product each). Those calls must give the exact finite results, forward and both gradients."""
    big = np.float32(1.8e38)
    x = np.zeros((1, 32, 4, 4), np.float32)
    x[0, 0, :2], x[0, 0, 2:] = big, -big
    weight = np.zeros((32, 32, 3, 3), np.float32)
    weight[:, 0, 1, 1] = 1.0  # each output channel copies the centre of input channel 0's window
    y = F.conv2d(x, weight)
    np.testing.assert_array_equal(y, np.broadcast_to(x[:, :1, 1:3, 1:3], y.shape))
    big_grad = np.zeros_like(y)
    big_grad[0, 0] = [[big, -big], [-big, big]]
    grad_x = F.conv2d_backward(big_grad, x, weight, output_mask=(True, False, False))[0]
    expected_x = np.zeros_like(x)
    expected_x[0, 0, 1:3, 1:3] = big_grad[0, 0]  # the transposed copy: only channel 0 has nonzero weights
    np.testing.assert_array_equal(grad_x, expected_x)
    one_grad = np.zeros_like(y)
    one_grad[0, 0, 0, 0] = 1.0
    grad_w = F.conv2d_backward(one_grad, x, weight, output_mask=(False, True, False))[1]
    expected_w = np.zeros_like(weight)
    expected_w[0, :] = x[0, :, 0:3, 0:3]  # the window of output pixel (0, 0)
    np.testing.assert_array_equal(grad_w, expected_w)


def test_average_pooling_fast_paths_give_the_general_loops_signed_zeros():
    """The general loop sums from +0 and adds gradients into zeros, so windows of -0 give +0 on every path."""
    x = np.full((1, 1, 16, 18), -0.0, np.float32)  # 2x2 windows: the vector path and, with the odd size, the tail
    y = F.avg_pool2d(x, 2)
    assert not np.signbit(y).any()
    gx = F.avg_pool2d_backward(np.full(y.shape, -0.0, np.float32), x.shape, 2)
    assert not np.signbit(gx).any()


def test_max_pool2d_backward_accumulates_overlapping_windows():
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = 1.0  # the centre is the maximum of all four overlapping 2x2 windows
    y, indices = F.max_pool2d(x, 2, stride=1, return_indices=True)
    assert np.all(indices == 4)
    gx = F.max_pool2d_backward(np.ones_like(y), indices, x.shape)
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = 4.0
    np.testing.assert_array_equal(gx, expected)
