"""Every documented rule raises ValueError/TypeError naming the function, the argument, the rule and the value."""
import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from fastcnn import reference as R

X = np.zeros((2, 3, 8, 8), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: F.conv2d(X[0], W), ValueError, r"conv2d: expected input with 4 dimensions \(N, C_in, H, W\); got 3"),
        (lambda: F.conv2d(X, W[0]), ValueError, r"conv2d: expected weight with 4 dimensions .*got 3"),
        (lambda: F.conv2d(np.zeros((2, 4, 8, 8)), W), ValueError,
         r"conv2d: expected input of shape \(N, C_in, H, W\) with C_in=3 to match weight \(4, 3, 3, 3\) and groups=1; got \(2, 4, 8, 8\)"),
        (lambda: F.conv2d(X, np.zeros((4, 1, 3, 3)), groups=3), ValueError,
         r"conv2d: groups must divide out_channels; got groups=3"),
        (lambda: F.conv2d(X, W, groups=0), ValueError, r"conv2d: groups must be a positive int; got 0"),
        (lambda: F.conv2d(X, W, groups=1.0), TypeError, r"conv2d: groups must be a positive int; got 1.0"),
        (lambda: F.conv2d(X, W, bias=np.zeros(3)), ValueError, r"conv2d: expected bias of shape \(4,\)"),
        (lambda: F.conv2d(X, np.zeros((4, 3, 9, 9))), ValueError,
         r"conv2d: the kernel must fit in the padded input; got padded input size 8x8 and kernel size 9x9"),
        (lambda: F.conv2d(X, W, dilation=4), ValueError, r"conv2d: the kernel must fit .*effective 9x9"),
        (lambda: F.conv2d(X, W, stride=0), ValueError, r"conv2d: stride must be an int >= 1 or a pair of ints >= 1; got 0"),
        (lambda: F.conv2d(X, W, stride=(1, -1)), ValueError, r"conv2d: stride must be .*got \(1, -1\)"),
        (lambda: F.conv2d(X, W, dilation=0), ValueError, r"conv2d: dilation must be an int >= 1"),
        (lambda: F.conv2d(X, W, padding=-1), ValueError, r"conv2d: padding must be an int >= 0 .*got -1"),
        (lambda: F.conv2d(X, W, padding=(1, 2, 3)), ValueError, r"conv2d: padding must be .*got \(1, 2, 3\)"),
        (lambda: F.conv2d(X, W, padding="full"), ValueError, r"conv2d: padding must be an int, a pair of ints, 'valid' or 'same'; got 'full'"),
        (lambda: F.conv2d(X, W, padding="same", stride=2), ValueError, r"conv2d: padding='same' requires stride=1"),
        (lambda: F.conv2d(X, W, stride=2.0), TypeError, r"conv2d: stride must be an int >= 1 .*got 2.0"),
        (lambda: F.conv2d(np.zeros((0, 3, 8, 8)), W), ValueError, r"conv2d: input must not be empty; got shape \(0, 3, 8, 8\)"),
        (lambda: F.conv2d(X.astype(np.complex64), W), TypeError, r"conv2d: input must hold bool, integer or floating values; got dtype complex64 \(complex"),
        (lambda: F.conv2d(X.astype(object), W), TypeError, r"conv2d: input must hold .*got dtype object"),
        (lambda: F.conv2d("image", W), TypeError, r"conv2d: input must be an array of numbers; got 'image'"),
        (lambda: F.conv2d(X, [[1, 2], [3]]), TypeError, r"conv2d: weight must be an array of numbers"),
        (lambda: F.conv2d_backward(np.zeros((2, 4, 7, 7)), X, W), ValueError,
         r"conv2d_backward: expected grad_output of shape \(2, 4, 6, 6\) .*got \(2, 4, 7, 7\)"),
        (lambda: F.conv2d_backward(np.zeros((2, 4, 6, 6)), X, W, output_mask=(True, False)), ValueError,
         r"conv2d_backward: output_mask must be a sequence of three bools"),
        (lambda: F.max_pool2d(X[0], 2), ValueError, r"max_pool2d: expected input with 4 dimensions \(N, C, H, W\)"),
        (lambda: F.max_pool2d(X, 0), ValueError, r"max_pool2d: kernel_size must be an int >= 1 .*got 0"),
        (lambda: F.max_pool2d(X, 2, stride=0), ValueError, r"max_pool2d: stride must be an int >= 1"),
        (lambda: F.max_pool2d(X, 3, padding=2), ValueError,
         r"max_pool2d: padding must be at most half of kernel_size; got padding=\(2, 2\) and kernel_size=\(3, 3\)"),
        (lambda: F.max_pool2d(X, 9), ValueError, r"max_pool2d: kernel_size \(9, 9\) .*larger than the input plane 8x8"),
        (lambda: F.max_pool2d(X, 2, ceil_mode="yes"), TypeError, r"max_pool2d: ceil_mode must be a bool; got 'yes'"),
        (lambda: F.avg_pool2d(X, (2, 2, 2)), ValueError, r"avg_pool2d: kernel_size must be .*got \(2, 2, 2\)"),
        (lambda: F.avg_pool2d(X, 2, count_include_pad=None), TypeError, r"avg_pool2d: count_include_pad must be a bool"),
        (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 3, 3)), X.shape, 2), ValueError,
         r"avg_pool2d_backward: expected grad_output of shape \(2, 3, 4, 4\) .*got \(2, 3, 3, 3\)"),
        (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 4, 4)), (2, 3, 8), 2), ValueError,
         r"avg_pool2d_backward: input_shape must be a sequence of four positive ints"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)), X.shape), TypeError,
         r"max_pool2d_backward: indices must be an integer array .*got dtype float64"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 3), int), X.shape), ValueError,
         r"max_pool2d_backward: expected indices of the same shape as grad_output \(2, 3, 4, 4\); got \(2, 3, 4, 3\)"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), int), (2, 5, 8, 8)), ValueError,
         r"max_pool2d_backward: grad_output \(2, 3, 4, 4\) and input_shape \(2, 5, 8, 8\) must agree on N and C"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), int), (2, 3, 0, 8)), ValueError,
         r"max_pool2d_backward: input_shape must be a sequence of four positive ints"),
    ],
)
def test_bad_arguments_are_named_in_the_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("bad_index", [64, -1, 2**40, -(2**62)])
def test_crafted_max_pool_indices_never_write_outside_the_input(bad_index):
    grad = np.ones((2, 3, 4, 4), np.float32)
    indices = np.zeros((2, 3, 4, 4), np.int64)
    indices[1, 2, 3, 1] = bad_index
    with pytest.raises(ValueError, match=rf"max_pool2d_backward: indices must lie in \[0, H\*W\) = \[0, 64\) .*got {bad_index}"):
        F.max_pool2d_backward(grad, indices, X.shape)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_first_bad_max_pool_index_is_the_one_reported_whichever_thread_meets_it(threads):
    """Indices are checked while the gradient is scattered, plane by plane on every thread: the error must still
    name the first bad position in the whole array, not the last one met."""
    grad = np.ones((8, 16, 16, 16), np.float32)  # 2 threads' worth of work (planes of 32x32 inputs)
    indices = np.zeros(grad.shape, np.int64)
    indices[7, 15, 15, 15] = -5   # the last plane, met last ...
    indices[0, 3, 2, 1] = 1024    # ... but this one comes first
    before = fastcnn.get_num_threads()
    fastcnn.set_num_threads(threads)
    try:
        with pytest.raises(ValueError, match=rf"got 1024 at flat position {(3 * 16 + 2) * 16 + 1}$"):
            F.max_pool2d_backward(grad, indices, (8, 16, 32, 32))
    finally:
        fastcnn.set_num_threads(before)


def test_reference_applies_the_same_rules():
    with pytest.raises(ValueError, match="conv2d: expected input of shape"):
        R.conv2d(np.zeros((2, 4, 8, 8)), W)
    with pytest.raises(ValueError, match="max_pool2d: padding must be at most half of kernel_size"):
        R.max_pool2d(X, 3, padding=2)
    with pytest.raises(TypeError, match="complex"):
        R.avg_pool2d(X.astype(np.complex128), 2)
