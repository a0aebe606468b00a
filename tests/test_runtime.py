"""Threads, memory limit, SIMD variants and the version: the runtime contract of the compiled kernels."""
import importlib.metadata
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]


def all_ops(x, weight, dy_conv, dy_pool):
    """Every kernel once, on shapes big enough to be split between threads in several ways."""
    y = F.conv2d(x, weight, np.arange(weight.shape[0], dtype=np.float32), padding=1)
    grads = F.conv2d_backward(dy_conv, x, weight, padding=1)
    pooled, indices = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    return [
        y, *grads, pooled, indices,
        F.max_pool2d_backward(dy_pool, indices, x.shape),
        F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        F.avg_pool2d_backward(dy_pool, x.shape, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    ]


def make_operands(rng, batch):
    x = rng.standard_normal((batch, 12, 23, 21)).astype(np.float32)
    weight = rng.standard_normal((10, 12, 3, 3)).astype(np.float32)
    dy_conv = rng.standard_normal((batch, 10, 23, 21)).astype(np.float32)
    dy_pool = rng.standard_normal((batch, 12, 12, 11)).astype(np.float32)
    return x, weight, dy_conv, dy_pool


@pytest.mark.parametrize("batch", [1, 3, 37])
def test_results_are_bitwise_identical_for_any_thread_count(rng, batch):
    operands = make_operands(rng, batch)
    fastcnn.set_num_threads(1)
    serial = all_ops(*operands)
    for threads in (2, 3, 8):
        fastcnn.set_num_threads(threads)
        for a, b in zip(serial, all_ops(*operands)):
            np.testing.assert_array_equal(a, b)


# Geometries that take each implicit-GEMM path: vectors along channels (forward and input gradient) with the taps x
# channels weight gradient; whole-row tiles with grad_output read in place, and streamed past the caches when the
# output is large; LeNet's layers; one image split into chunks; Winograd's algorithm (3x3, 32 channels or more),
# odd sizes and one image. (N, C_in, H, W, C_out, k, padding)
PATH_GEOMETRIES = [(3, 16, 8, 8, 32, 3, 1), (3, 4, 16, 32, 8, 3, 1), (64, 3, 32, 64, 36, 3, 1), (5, 6, 14, 14, 16, 5, 0),
                   (37, 1, 28, 28, 6, 5, 2), (1, 32, 20, 20, 64, 3, 1), (3, 32, 9, 7, 40, 3, 1),
                   (1, 40, 30, 30, 48, 3, 1)]


@pytest.mark.parametrize("geometry", PATH_GEOMETRIES, ids=str)
def test_every_convolution_path_is_bitwise_identical_for_any_thread_count(rng, geometry):
    n, c, h, w, o, k, p = geometry
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c, k, k)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    dy = rng.standard_normal((n, o, h + 2 * p - k + 1, w + 2 * p - k + 1)).astype(np.float32)

    def passes():
        pooled, indices = F.max_pool2d(x, 2, return_indices=True)  # the 2x2 fast paths too
        return [F.conv2d(x, weight, bias, padding=p), *F.conv2d_backward(dy, x, weight, padding=p), pooled,
                F.max_pool2d_backward(pooled, indices, x.shape), F.avg_pool2d(x, 2),
                F.avg_pool2d_backward(pooled, x.shape, 2)]

    fastcnn.set_num_threads(1)
    serial = passes()
    for threads in (2, 3, 8):
        fastcnn.set_num_threads(threads)
        for a, b in zip(serial, passes()):
            np.testing.assert_array_equal(a, b)


def test_concurrent_calls_from_python_threads_match_serial_results(rng):
    inputs = [make_operands(np.random.default_rng(seed), 4) for seed in range(6)]
    expected = [all_ops(*operands) for operands in inputs]
    results, errors = [None] * len(inputs), []

    def work(i):
        try:
            for _ in range(3):
                results[i] = all_ops(*inputs[i])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_set_num_threads_is_process_wide():
    fastcnn.set_num_threads(1)
    seen = []
    t = threading.Thread(target=lambda: seen.append(fastcnn.get_num_threads()))
    t.start()
    t.join()
    assert seen == [1]
    fastcnn.set_num_threads(2)
    t = threading.Thread(target=lambda: seen.append(fastcnn.get_num_threads()))
    t.start()
    t.join()
    assert seen == [1, 2]


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (10**6, ValueError), (1.5, TypeError),
                                        ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_values(bad, error):
    with pytest.raises(error, match=r"set_num_threads: n must be"):
        fastcnn.set_num_threads(bad)


def test_memory_limit_refuses_before_allocating(rng):
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    fastcnn.set_memory_limit(64 * 1024)
    assert fastcnn.get_memory_limit() == 64 * 1024
    with pytest.raises(MemoryError, match=r"conv2d: this call needs \d+ bytes .* memory limit of 65536 bytes"):
        F.conv2d(x, w, padding=1)
    with pytest.raises(MemoryError, match=r"max_pool2d: .*memory limit"):
        F.max_pool2d(np.zeros((8, 16, 128, 128), np.float32), 2)
    fastcnn.set_memory_limit(None)
    assert F.conv2d(x, w, padding=1).shape == (8, 16, 32, 32)


def test_huge_outputs_raise_instead_of_crashing():
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(MemoryError, match="memory limit"):
        F.conv2d(x, w, padding=200_000)  # a 400k x 400k output: tens of terabytes
    with pytest.raises(ValueError, match="overflow"):
        F.conv2d(x, w, padding=2**61)
    with pytest.raises(MemoryError, match="memory limit"):
        F.max_pool2d_backward(np.ones((1, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1), np.int64),
                              (1, 1, 10**6, 10**6))


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (2**63, ValueError), ("1GB", TypeError)])
def test_set_memory_limit_rejects_bad_values(bad, error):
    with pytest.raises(error, match="set_memory_limit: nbytes must be a positive int"):
        fastcnn.set_memory_limit(bad)


def test_default_memory_limit_is_a_fraction_of_physical_memory():
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < fastcnn.get_memory_limit() <= physical


@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_every_simd_variant_matches_the_reference(variant):
    """FASTCNN_SIMD caps the instruction set; each variant must agree with the reference (where the CPU has it)."""
    script = (
        "import numpy as np, fastcnn\n"
        "from fastcnn import functional as F, reference as R\n"
        "rng = np.random.default_rng(0)\n"
        # (N, C_in, H, W, C_out, k, padding): kernels and orientations of the implicit GEMM the plans pick from,
        # Winograd's algorithm (with channels that are not whole vectors, and more than one K block), and input
        # gradients that skip padding taps (20 channels: a last panel of fewer than MR rows; 32 wide: whole-row tiles)
        "for n, c, h, wd, o, k, p in [(3, 7, 19, 17, 13, 3, 1), (2, 1, 28, 28, 6, 5, 2), (2, 6, 14, 14, 16, 5, 0),\n"
        "                             (3, 16, 8, 8, 32, 3, 1), (2, 15, 8, 8, 44, 3, 1), (2, 16, 19, 19, 32, 5, 0),\n"
        "                             (2, 34, 9, 11, 37, 3, 1), (1, 260, 5, 5, 32, 3, 1), (2, 20, 7, 32, 5, 5, 0)]:\n"
        "    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)\n"
        "    w = rng.standard_normal((o, c, k, k)).astype(np.float32)\n"
        "    y = F.conv2d(x, w, padding=p)\n"
        "    dy = rng.standard_normal(y.shape).astype(np.float32)\n"
        "    got = (y,) + F.conv2d_backward(dy, x, w, padding=p)\n"
        "    want = (R.conv2d(x.astype(float), w.astype(float), padding=p),)"
        " + R.conv2d_backward(dy.astype(float), x.astype(float), w.astype(float), padding=p)\n"
        "    for a, b in zip(got, want): np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)\n"
        "print(fastcnn.simd_level())\n"
    )
    env = dict(os.environ, FASTCNN_SIMD=variant)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    level = done.stdout.strip()
    order = ["generic", "avx2", "avx512"]
    assert order.index(level) <= order.index(variant)
    if variant == "generic":
        assert level == "generic"


def test_version_comes_from_pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert fastcnn.__version__ == declared == importlib.metadata.version("fastcnn")
    assert fastcnn._core.__version__ == declared  # the compiled module got the same string from CMake
