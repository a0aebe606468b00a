"""Property-based checks: random shapes and hyper-parameters, the kernels against the NumPy reference.

Hypothesis draws the geometry (including invalid combinations, which must raise the same documented error from both
implementations); each op gets 200 examples here. For a longer run before a release:
`pytest tests/test_properties.py --hypothesis-seed=random -p no:cacheprovider` with FASTCNN_PROPERTY_EXAMPLES=5000.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcnn import functional as F
from fastcnn import reference as R

EXAMPLES = int(os.environ.get("FASTCNN_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(call):
    """The result, or the type and message of the error raised."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        return type(error), str(error)


def same(fast, ref, scale=1.0):
    if isinstance(ref, tuple) and ref and isinstance(ref[0], type):
        assert fast == ref, "the two implementations must refuse the same input with the same message"
        return
    assert not (isinstance(fast, tuple) and fast and isinstance(fast[0], type)), f"kernel raised {fast}"
    fast_parts = fast if isinstance(fast, tuple) else (fast,)
    ref_parts = ref if isinstance(ref, tuple) else (ref,)
    for f, r in zip(fast_parts, ref_parts):
        if f is None or r is None:
            assert f is None and r is None
            continue
        if np.asarray(r).dtype.kind in "iu":
            np.testing.assert_array_equal(f, r)
        else:
            np.testing.assert_allclose(f, r, rtol=1e-4, atol=1e-4 * max(1.0, scale))


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.sampled_from(["same", "valid"])))
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32) if draw(st.booleans()) else None
    return x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups), rng


@SETTINGS
@given(conv_problems())
def test_conv2d_forward_matches_reference(problem):
    x, weight, bias, kwargs, _ = problem
    same(outcome(lambda: F.conv2d(x, weight, bias, **kwargs)),
         outcome(lambda: R.conv2d(x.astype(np.float64), weight.astype(np.float64),
                                  None if bias is None else bias.astype(np.float64), **kwargs)),
         scale=np.sqrt(weight[0].size))


@SETTINGS
@given(conv_problems(), st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_conv2d_backward_matches_reference(problem, mask):
    x, weight, _, kwargs, rng = problem
    reference_forward = outcome(lambda: R.conv2d(x, weight, **kwargs))
    if isinstance(reference_forward, tuple):
        return  # invalid geometry: covered by the forward property
    grad = rng.standard_normal(reference_forward.shape).astype(np.float32)
    same(outcome(lambda: F.conv2d_backward(grad, x, weight, output_mask=mask, **kwargs)),
         outcome(lambda: R.conv2d_backward(grad.astype(np.float64), x.astype(np.float64), weight.astype(np.float64),
                                           output_mask=mask, **kwargs)),
         scale=np.sqrt(grad.size))


@st.composite
def winograd_problems(draw):
    """3x3, stride 1, 32 or more channels both ways: the geometries that take Winograd's F(2x2, 3x3)."""
    c_in, c_out = draw(st.integers(32, 70)), draw(st.integers(32, 70))
    padding = draw(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.sampled_from(["same", "valid"])))
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32) if draw(st.booleans()) else None
    return x, weight, bias, dict(padding=padding), rng


@SETTINGS
@given(winograd_problems())
def test_winograd_layers_match_reference_forward_and_backward(problem):
    x, weight, bias, kwargs, rng = problem
    expected = outcome(lambda: R.conv2d(x.astype(np.float64), weight.astype(np.float64),
                                        None if bias is None else bias.astype(np.float64), **kwargs))
    same(outcome(lambda: F.conv2d(x, weight, bias, **kwargs)), expected, scale=np.sqrt(weight[0].size))
    if isinstance(expected, tuple):
        return  # a kernel larger than the padded input: refused by both
    grad = rng.standard_normal(expected.shape).astype(np.float32)
    same(outcome(lambda: F.conv2d_backward(grad, x, weight, **kwargs)),
         outcome(lambda: R.conv2d_backward(grad.astype(np.float64), x.astype(np.float64), weight.astype(np.float64),
                                           **kwargs)),
         scale=np.sqrt(grad.size))


@st.composite
def pool_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 11)), draw(st.integers(1, 11))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    values = draw(st.sampled_from(["normal", "ties"]))
    x = (rng.standard_normal((n, c, h, w)) if values == "normal" else rng.integers(0, 3, (n, c, h, w))).astype(np.float32)
    kwargs = dict(kernel_size=(kh, kw), stride=stride, padding=padding, ceil_mode=draw(st.booleans()))
    return x, kwargs, rng


@SETTINGS
@given(pool_problems())
def test_max_pool2d_and_its_gradient_match_reference(problem):
    x, kwargs, rng = problem
    fast = outcome(lambda: F.max_pool2d(x, return_indices=True, **kwargs))
    ref = outcome(lambda: R.max_pool2d(x, return_indices=True, **kwargs))
    same(fast, ref)
    if isinstance(ref, tuple) and isinstance(ref[0], type):
        return
    grad = rng.standard_normal(ref[0].shape).astype(np.float32)
    same(F.max_pool2d_backward(grad, fast[1], x.shape), R.max_pool2d_backward(grad.astype(np.float64), ref[1], x.shape))


@SETTINGS
@given(pool_problems(), st.booleans())
def test_avg_pool2d_and_its_gradient_match_reference(problem, count_include_pad):
    x, kwargs, rng = problem
    ref = outcome(lambda: R.avg_pool2d(x.astype(np.float64), count_include_pad=count_include_pad, **kwargs))
    same(outcome(lambda: F.avg_pool2d(x, count_include_pad=count_include_pad, **kwargs)), ref)
    if isinstance(ref, tuple):
        return
    grad = rng.standard_normal(ref.shape).astype(np.float32)
    same(F.avg_pool2d_backward(grad, x.shape, count_include_pad=count_include_pad, **kwargs),
         R.avg_pool2d_backward(grad.astype(np.float64), x.shape, count_include_pad=count_include_pad, **kwargs))


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.float16, np.float64, bool])
def test_every_numeric_dtype_is_accepted_and_computed_in_float32(dtype):
    x = (np.arange(2 * 3 * 6 * 5) % 4).reshape(2, 3, 6, 5).astype(dtype)
    w = np.ones((2, 3, 3, 3), dtype)
    y = F.conv2d(x, w)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, R.conv2d(x.astype(np.float64), w.astype(np.float64)), rtol=1e-5)
