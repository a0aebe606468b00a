"""Hardening of the compiled kernels: any argument at all, any dtype and layout, 8 Python threads at once, outputs
and workspaces over the memory limit, and repeated calls that must not leak. CI also runs this file against the
AddressSanitizer + UBSan build (tests/run_all.sh), where an out-of-bounds access or undefined behaviour aborts.

FASTCNN_PROPERTY_EXAMPLES (default 200) sets the examples per property, as in test_properties.py; the longer
before-release run is described in docs/reliability.md.
"""
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fastcnn
from fastcnn import functional as F
from fastcnn import reference as R

EXAMPLES = int(os.environ.get("FASTCNN_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _under_asan():
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


UNDER_ASAN = _under_asan()

DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]
REFUSED_DTYPES = [np.complex64, object, np.str_, "datetime64[s]"]


SEEN_CHECK_ORDER_DIFFERENCES = []


def outcome(call):
    """The result, or the type and message of the documented error raised (anything else propagates and fails)."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        return type(error), str(error)


def refused(result):
    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], type)


def assert_same(fast, ref, scale=1.0):
    if refused(ref) or refused(fast):
        assert refused(fast) and refused(ref), f"only one implementation refused: kernel {fast!r}, reference {ref!r}"
        # With several bad arguments the two may name a different one first; each names the op and an argument.
        op = ref[1].split(":")[0]
        assert fast[1].startswith(op + ": "), (fast, ref)
        if fast != ref:
            SEEN_CHECK_ORDER_DIFFERENCES.append((fast, ref))
        event("refused")
        return
    event("computed")
    for f, r in zip(fast if isinstance(fast, tuple) else (fast,), ref if isinstance(ref, tuple) else (ref,)):
        assert (f is None) == (r is None)
        if f is None:
            continue
        assert f.dtype in (np.float32, np.int64) and f.flags.c_contiguous
        if np.asarray(r).dtype.kind in "iu":
            np.testing.assert_array_equal(f, r)
        else:
            np.testing.assert_allclose(f, r, rtol=1e-4, atol=1e-4 * max(1.0, scale))


# ------------------------------------------------------------------------------------------ any argument, any dtype

def arrays(draw, shape, dtype):
    """Small values every dtype holds exactly, sometimes in a non-contiguous layout."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = draw(st.sampled_from(["contiguous", "strided", "transposed"]))
    if layout == "strided":
        big = rng.integers(-3, 4, tuple(s * 2 for s in shape)) if shape else rng.integers(-3, 4, ())
        values = big[tuple(slice(None, None, 2) for _ in shape)]
    elif layout == "transposed" and len(shape) >= 2:
        values = np.swapaxes(rng.integers(-3, 4, shape[:-2] + (shape[-1], shape[-2])), -1, -2)
    else:
        values = rng.integers(-3, 4, shape)
    if dtype in (np.uint8, np.bool_):
        values = np.abs(values)
    return values.astype(dtype)


def mostly(draw, valid, invalid):
    """One value in ten from `invalid`: most calls then have at most one bad argument, and about half compute."""
    return draw(invalid) if draw(st.integers(0, 9)) == 0 else draw(valid)


def sizes(draw, low, high):
    """An argument such as stride or padding: usually valid, sometimes not (zero, negative, float, str, 3 values)."""
    valid = st.one_of(st.integers(low, high), st.tuples(st.integers(low, high), st.integers(low, high)))
    invalid = st.one_of(st.integers(-3, low - 1) if low > -3 else st.just(-3),
                        st.sampled_from([1.0, "2", (1, 2, 3), (), None, True, [2, 2], np.int64(2), (1, -1)]))
    return mostly(draw, valid, invalid)


@st.composite
def conv_calls(draw):
    groups = mostly(draw, st.integers(1, 3), st.sampled_from([0, -1, 2.0, None]))
    g = groups if isinstance(groups, int) and groups > 0 else 1
    c_in = g * draw(st.integers(1, 2)) + mostly(draw, st.just(0), st.just(1))  # sometimes not divisible
    c_out = g * draw(st.integers(1, 2))
    shape = (draw(st.integers(1, 2)), c_in, draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    shape = shape[:mostly(draw, st.just(4), st.sampled_from([3, 2]))]  # sometimes the wrong number of dimensions
    dtype = draw(st.sampled_from(DTYPES))
    x = arrays(draw, shape, dtype)
    weight = arrays(draw, (c_out, max(c_in // g, 1), draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                    draw(st.sampled_from(DTYPES)))
    bias = mostly(draw, st.sampled_from([None, "match"]), st.just("wrong"))
    bias = None if bias is None else np.ones(c_out if bias == "match" else c_out + 1, np.float32)
    padding = draw(st.sampled_from(["same", "valid", "full"])) if draw(st.integers(0, 4)) == 0 else sizes(draw, 0, 3)
    kwargs = dict(stride=sizes(draw, 1, 3), padding=padding, dilation=sizes(draw, 1, 2), groups=groups)
    return x, weight, bias, kwargs


@SETTINGS
@given(conv_calls())
def test_conv2d_with_any_arguments_and_dtypes_matches_the_reference_or_refuses_alike(call):
    x, weight, bias, kwargs = call
    fast = outcome(lambda: F.conv2d(x, weight, bias, **kwargs))
    ref = outcome(lambda: R.conv2d(x.astype(np.float64), weight.astype(np.float64),
                                   None if bias is None else bias.astype(np.float64), **kwargs))
    assert_same(fast, ref, scale=np.sqrt(weight[0].size) * 9)
    if refused(ref):
        return
    grad = np.ones(ref.shape, np.float32)
    assert_same(outcome(lambda: F.conv2d_backward(grad, x, weight, **kwargs)),
                outcome(lambda: R.conv2d_backward(grad.astype(np.float64), x.astype(np.float64),
                                                  weight.astype(np.float64), **kwargs)),
                scale=np.sqrt(grad.size) * 9)


@st.composite
def pool_calls(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    shape = shape[:mostly(draw, st.just(4), st.sampled_from([3, 2]))]
    x = arrays(draw, shape, draw(st.sampled_from(DTYPES)))
    kwargs = dict(kernel_size=sizes(draw, 1, 4), stride=None if draw(st.booleans()) else sizes(draw, 1, 3),
                  padding=sizes(draw, 0, 2), ceil_mode=mostly(draw, st.booleans(), st.sampled_from(["yes", 1, None])))
    return x, kwargs


@SETTINGS
@given(pool_calls())
def test_max_pool2d_with_any_arguments_and_dtypes_matches_the_reference_or_refuses_alike(call):
    x, kwargs = call
    fast = outcome(lambda: F.max_pool2d(x, return_indices=True, **kwargs))
    ref = outcome(lambda: R.max_pool2d(x.astype(np.float64), return_indices=True, **kwargs))
    assert_same(fast, ref)
    if refused(ref):
        return
    grad = np.ones(ref[0].shape, np.float32)
    assert_same(F.max_pool2d_backward(grad, fast[1], x.shape), R.max_pool2d_backward(grad, ref[1], x.shape))


@SETTINGS
@given(pool_calls(), st.sampled_from([True, False, True, False, None]))
def test_avg_pool2d_with_any_arguments_and_dtypes_matches_the_reference_or_refuses_alike(call, count_include_pad):
    x, kwargs = call
    fast = outcome(lambda: F.avg_pool2d(x, count_include_pad=count_include_pad, **kwargs))
    ref = outcome(lambda: R.avg_pool2d(x.astype(np.float64), count_include_pad=count_include_pad, **kwargs))
    assert_same(fast, ref)
    if refused(ref):
        return
    grad = np.ones(ref.shape, np.float32)
    assert_same(outcome(lambda: F.avg_pool2d_backward(grad, x.shape, count_include_pad=count_include_pad, **kwargs)),
                outcome(lambda: R.avg_pool2d_backward(grad.astype(np.float64), x.shape,
                                                      count_include_pad=count_include_pad, **kwargs)))


@pytest.mark.parametrize("dtype", REFUSED_DTYPES, ids=str)
def test_non_numeric_dtypes_are_refused_by_every_op(dtype):
    x = np.zeros((1, 1, 4, 4)).astype(dtype)
    w = np.zeros((1, 1, 3, 3), np.float32)
    for call in (lambda: F.conv2d(x, w), lambda: F.conv2d(np.zeros((1, 1, 4, 4)), x[:, :, :3, :3]),
                 lambda: F.max_pool2d(x, 2), lambda: F.avg_pool2d(x, 2),
                 lambda: F.avg_pool2d_backward(x[:, :, :2, :2], (1, 1, 4, 4), 2)):
        with pytest.raises(TypeError, match=r"must (hold bool, integer or floating values|be an array of numbers)"):
            call()


@SETTINGS
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=4, max_size=4), st.integers(0, 3))
def test_crafted_max_pool_indices_are_refused_or_land_inside_the_plane(values, position):
    """Indices come from users (saved, edited, from another library): any int64 value must be safe."""
    indices = np.array(values, np.int64).reshape(1, 1, 2, 2)
    grad = np.ones((1, 1, 2, 2), np.float32)
    result = outcome(lambda: F.max_pool2d_backward(grad, indices, (1, 1, 4, 4)))
    if all(0 <= v < 16 for v in values):
        expected = np.zeros(16, np.float32)
        np.add.at(expected, np.array(values), 1.0)
        np.testing.assert_array_equal(result.reshape(-1), expected)
    else:
        assert refused(result) and result[0] is ValueError and "indices" in result[1]


# ------------------------------------------------------------------------------------------ 8 threads at once

def every_op(x, weight, dy_conv, dy_pool):
    y = F.conv2d(x, weight, np.arange(weight.shape[0], dtype=np.float32), stride=1, padding=1, dilation=(1, 2))
    grads = F.conv2d_backward(dy_conv, x, weight, padding=1, dilation=(1, 2))
    pooled, indices = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    return [y, *grads, pooled, indices, F.max_pool2d_backward(dy_pool, indices, x.shape),
            F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
            F.avg_pool2d_backward(dy_pool, x.shape, 3, stride=2, padding=1, ceil_mode=True)]


def operands(seed):
    rng = np.random.default_rng(seed)
    batch = 2 + seed % 5  # different shapes too, so no two threads share a workspace size
    x = rng.standard_normal((batch, 6, 15, 13)).astype(np.float32)
    weight = rng.standard_normal((5, 6, 3, 3)).astype(np.float32)
    dy_conv = rng.standard_normal((batch, 5, 15, 11)).astype(np.float32)
    dy_pool = rng.standard_normal((batch, 6, 8, 7)).astype(np.float32)
    return x, weight, dy_conv, dy_pool


def test_eight_python_threads_at_once_give_exactly_the_serial_results_while_the_thread_count_changes():
    inputs = [operands(seed) for seed in range(8)]
    fastcnn.set_num_threads(1)
    serial = [every_op(*args) for args in inputs]
    start = threading.Barrier(9)  # the 8 workers and the thread that keeps changing set_num_threads
    done = threading.Event()
    results, errors = [[] for _ in inputs], []

    def work(i):
        try:
            start.wait()
            for _ in range(4):
                results[i].append(every_op(*inputs[i]))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def change_thread_count():
        start.wait()
        n = 0
        while not done.is_set():
            fastcnn.set_num_threads(1 + n % 4)  # kernels read it once per call: results must not depend on it
            n += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    changer = threading.Thread(target=change_thread_count)
    for t in [*workers, changer]:
        t.start()
    for t in workers:
        t.join()
    done.set()
    changer.join()
    assert not errors, errors
    for got_runs, want in zip(results, serial):
        assert len(got_runs) == 4
        for got in got_runs:
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------ resource limits

HUGE_CALLS = {
    "conv2d padding": lambda: F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32),
                                       padding=100_000),
    "conv2d overflow": lambda: F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32),
                                        padding=2**62),
    "conv2d rows": lambda: F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((64, 1, 1, 1), np.float32),
                                    padding=(2**31, 0)),
    "conv2d channels": lambda: F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 1, 1), np.float32),
                                        padding=(2**20, 2**20), dilation=1),
    "max_pool2d_backward": lambda: F.max_pool2d_backward(np.ones((1, 1, 1, 1), np.float32),
                                                         np.zeros((1, 1, 1, 1), np.int64), (1, 1, 10**6, 10**6)),
    "max_pool2d_backward overflow": lambda: F.max_pool2d_backward(np.ones((1, 1, 1, 1), np.float32),
                                                                  np.zeros((1, 1, 1, 1), np.int64),
                                                                  (1, 1, 2**40, 2**40)),
    "avg_pool2d_backward": lambda: F.avg_pool2d_backward(np.ones((1, 1, 1, 1), np.float32), (1, 1, 10**6, 10**6),
                                                         10**6),
}


@pytest.mark.parametrize("name", sorted(HUGE_CALLS))
def test_an_output_or_workspace_over_the_limit_is_refused_before_allocating(name, allocations):
    """Tens of terabytes asked for by a few bytes of input: MemoryError naming the limit, or ValueError for a size
    that does not even fit in int64, and nothing was allocated."""
    with allocations() as traced, pytest.raises((MemoryError, ValueError)) as caught:
        HUGE_CALLS[name]()
    assert "memory limit" in str(caught.value) or "overflow" in str(caught.value)
    assert traced["peak"] < 2**20


def test_converting_a_broadcast_input_counts_against_the_memory_limit_before_allocating(allocations):
    x = np.broadcast_to(np.float64(1), (64, 64, 64, 64))  # a few bytes that read as 128 MiB of float64
    fastcnn.set_memory_limit(2**20)
    with allocations() as traced, pytest.raises(MemoryError, match="memory limit"):
        F.avg_pool2d(x, 2)
    assert traced["peak"] < 2**20


def test_the_weight_gradient_of_a_huge_batch_needs_only_a_small_fixed_workspace():
    """The weight gradient sums over the batch block by block: 1 MiB is enough for 4096 images."""
    n = 4096
    x = np.zeros((n, 3, 28, 28), np.float32)
    w = np.zeros((8, 3, 3, 3), np.float32)
    fastcnn.set_memory_limit(2**20)
    dw, db = F.conv2d_backward(np.zeros((n, 8, 28, 28), np.float32), x, w, padding=1,
                               output_mask=(False, True, True))[1:]
    assert dw.shape == w.shape and db.shape == (8,)
    with pytest.raises(MemoryError, match="memory limit of 1048576 bytes"):
        F.conv2d(x, w, padding=1)


def test_a_huge_batch_is_convolved_in_blocks_whose_workspace_does_not_grow_with_the_batch():
    """A limit barely above the output's own size must be enough for 4096 images."""
    n = 4096
    x = np.zeros((n, 3, 28, 28), np.float32)
    w = np.zeros((8, 3, 3, 3), np.float32)
    fastcnn.set_memory_limit(n * 8 * 28 * 28 * 4 + 2**20)  # the output plus 1 MiB
    assert F.conv2d(x, w, padding=1).shape == (n, 8, 28, 28)


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_layers_copy_their_input_block_by_block_whatever_the_batch(threads):
    """3x3 layers with 32 channels take Winograd's algorithm, which copies its input channels last: one block of
    images at a time in each thread's buffer, never the whole batch (42 MB here), forward and weight gradient."""
    fastcnn.set_num_threads(threads)
    n = 1024
    x = np.ones((n, 32, 16, 16), np.float32)
    w = np.ones((32, 32, 3, 3), np.float32)
    fastcnn.set_memory_limit(n * 32 * 16 * 16 * 4 + 4 * 2**20)  # the output plus 4 MiB
    y = F.conv2d(x, w, padding=1)
    assert y[0, 0, 0, 0] == 32 * 4 and y[-1, -1, 8, 8] == 32 * 9  # exact: the transforms only halve integers
    del y
    grad_w = F.conv2d_backward(np.ones((n, 32, 16, 16), np.float32), x, w, padding=1,
                               output_mask=(False, True, False))[1]
    assert grad_w[0, 0, 1, 1] == n * 16 * 16 and grad_w[-1, -1, 0, 0] == n * 15 * 15


@pytest.mark.parametrize("threads", [1, 2])
def test_samples_whose_output_is_split_into_chunks_are_still_padded_one_at_a_time(threads):
    """64 output channels of 32x32 fill more than one L2-sized output chunk per sample; the samples' padded copies
    (74 KiB each, 4.7 MB for the batch) must still be made one per work item, not for the whole batch at once."""
    fastcnn.set_num_threads(threads)
    n = 64
    x = np.ones((n, 16, 32, 32), np.float32)
    w = np.ones((64, 16, 3, 3), np.float32)
    fastcnn.set_memory_limit(n * 64 * 32 * 32 * 4 + 2 * 2**20)  # the output plus 2 MiB
    y = F.conv2d(x, w, padding=1)
    assert y[0, 0, 0, 0] == 16 * 4 and y[-1, -1, 16, 16] == 16 * 9  # a corner sees 2x2 of the 3x3 window


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine holds freed memory on purpose")
def test_repeated_calls_do_not_leak_memory():
    """The C++ side owns its workspaces by RAII; 300 rounds of every op must not grow the process."""
    args = operands(3)
    for _ in range(20):
        every_op(*args)
    before = _current_rss()
    for _ in range(300):
        every_op(*args)
    assert _current_rss() - before < 16 * 2**20


def _current_rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
