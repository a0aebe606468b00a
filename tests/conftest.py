import contextlib
import tracemalloc

import numpy as np
import pytest

import fastcnn
from fastcnn import _core


@pytest.fixture(autouse=True, scope="session")
def nan_filled_outputs():
    """Outputs start as NaN, so an element a kernel forgets to write fails every comparison loudly."""
    _core.set_debug_nan_fill(True)
    yield
    _core.set_debug_nan_fill(False)


@pytest.fixture(autouse=True, scope="session")
def every_thread_even_for_tiny_calls():
    """Kernels run small calls on one thread; the tests' small inputs must still exercise the parallel split."""
    _core.set_debug_all_threads(True)
    yield
    _core.set_debug_all_threads(False)


@pytest.fixture(autouse=True)
def restore_runtime_settings():
    threads, limit = fastcnn.get_num_threads(), fastcnn.get_memory_limit()
    yield
    fastcnn.set_num_threads(threads)
    fastcnn.set_memory_limit(None if limit == _core.default_memory_limit() else limit)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@contextlib.contextmanager
def _traced_allocations():
    traced = {}
    tracemalloc.start()
    try:
        yield traced
    finally:
        traced["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.fixture
def allocations():
    """A context manager recording in traced["peak"] the peak of the memory allocated through Python inside the
    block (NumPy reports its arrays' buffers to tracemalloc): whether a call allocated what it should have refused,
    measured without depending on the machine's speed or on the process's earlier peaks."""
    return _traced_allocations
