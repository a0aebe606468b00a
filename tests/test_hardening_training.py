"""Determinism and thread safety of training: the same seed, data and thread count give bitwise-identical weights
(and, since every kernel is thread-count invariant, so do other thread counts); a model trained in one thread while
other threads read its published state and run the kernels see only whole, consistent steps; huge inference batches.
"""
import threading

import numpy as np
import pytest

import fastcnn
from fastcnn import nn, optim
from fastcnn.callbacks import Callback
from fastcnn.training import evaluate, fit, predict


def data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.standard_normal((n, 1, 12, 12)).astype(np.float32) * 0.5 + y[:, None, None, None] * 0.3
    return x, y


def network():
    # Every kind of kernel: convolution (forward, both gradients), BatchNorm, ReLU, both poolings, matmul.
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, seed=0), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1, groups=2, seed=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(72, 4, seed=2))


def train(threads, seed=0, callbacks=()):
    fastcnn.set_num_threads(threads)
    fastcnn.manual_seed(seed)
    model = network()
    x, y = data()
    fit(model, x, y, epochs=2, batch_size=24, seed=seed, progress=False, validation_split=0.25,
        optimizer=optim.Adam(model.parameters(), lr=3e-3), callbacks=list(callbacks))
    return model.state_dict()


def assert_bitwise_equal(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def test_the_same_seed_data_and_thread_count_give_bitwise_identical_weights():
    assert_bitwise_equal(train(2), train(2))


@pytest.mark.parametrize("threads", [1, 3])
def test_another_thread_count_gives_the_same_weights_too(threads):
    """Documented in docs/reliability.md: fastcnn's kernels split work so that the thread count changes nothing."""
    assert_bitwise_equal(train(2), train(threads))


def test_another_seed_trains_differently():
    assert not np.array_equal(train(2, seed=0)["0.weight"], train(2, seed=1)["0.weight"])


class Publisher(Callback):
    """The way to share a model being trained: copy its state between two steps, under a lock."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.latest = None  # (step, state_dict)
        self.step = 0

    def on_batch_end(self, batch, logs=None):
        self.step += 1
        state = self.model.state_dict()
        with self.lock:
            self.latest = (self.step, state)


def test_a_model_trained_in_one_thread_while_others_read_its_state_and_run_kernels():
    """The readers see whole steps (every array from the same step, equal to the serial run's), run inference on
    what they read at the same time, and the training thread's result is bitwise the serial one."""
    recorder = Publisher()
    trajectory = {}

    class Record(Callback):
        def on_batch_end(self, batch, logs=None):
            trajectory[recorder.step] = recorder.latest[1]

    serial = train(2, callbacks=[recorder, Record()])

    publisher = Publisher()
    finished = threading.Event()
    seen, errors = [], []
    x_probe = data(16, seed=9)[0]

    def reader():
        twin = network()
        try:
            while not finished.is_set():
                with publisher.lock:
                    latest = publisher.latest
                if latest is None:
                    continue
                step, state = latest
                assert_bitwise_equal(state, trajectory[step])
                twin.load_state_dict(state)
                probabilities = predict(twin, x_probe)  # the kernels, from this thread, during training
                assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
                seen.append(step)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    result = {}
    trainer = threading.Thread(target=lambda: result.update(state=train(2, callbacks=[publisher])))
    trainer.start()
    trainer.join()
    finished.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert len(set(seen)) > 1, "the readers ran while the model trained"
    assert_bitwise_equal(result["state"], serial)


def test_predict_and_evaluate_with_a_huge_batch_size_are_bounded_by_the_data():
    model = network()
    x, y = data(64)
    expected = predict(model, x, batch_size=8)
    np.testing.assert_allclose(predict(model, x, batch_size=2**62), expected, rtol=1e-6, atol=1e-7)
    assert evaluate(model, x, y, batch_size=2**62)["accuracy"] == evaluate(model, x, y, batch_size=8)["accuracy"]


def test_predict_splits_a_batch_that_would_exceed_the_memory_limit():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, seed=0), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 28 * 28, 10))
    x = np.random.default_rng(0).random((2000, 1, 28, 28), dtype=np.float32)
    expected = predict(model, x, batch_size=100)
    fastcnn.set_memory_limit(16 * 2**20)  # one conv output for 2000 images is 50 MB
    np.testing.assert_allclose(predict(model, x, batch_size=10**9), expected, rtol=1e-6)
    labels = expected.argmax(axis=1)
    assert fastcnn.evaluate(model, x, labels, batch_size=10**9)["accuracy"] == 1.0
    fastcnn.set_memory_limit(2**10)  # not even one image fits: the refusal reaches the caller
    with pytest.raises(MemoryError, match="memory limit"):
        predict(model, x[:4], batch_size=4)
