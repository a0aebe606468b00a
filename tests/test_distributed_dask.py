"""Batch inference on a real Dask LocalCluster (two worker processes) against plain `fastcnn.predict`, and what a
model pickles to."""
from __future__ import annotations

import copy
import pickle
import sys
import textwrap

import numpy as np
import pytest

import fastcnn
from fastcnn import distributed as dist
from fastcnn import nn


def _model(seed=0):
    fastcnn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.3), nn.Flatten(), nn.Linear(64, 3))


def _images(count, seed=1):
    return np.random.default_rng(seed).random((count, 1, 8, 8), dtype=np.float32)


# --- pickling: architecture and weights only --------------------------------------------------------------------

def test_a_model_pickles_to_its_architecture_and_weights_only():
    model = _model()
    x = _images(512)
    model.train()
    model.backward(np.ones_like(model(x)))  # caches of a 512-image batch and non-zero gradients
    weights = sum(p.data.nbytes for p in model.parameters()) + sum(b.nbytes for _, b in model.named_buffers())
    cached = model[0]._cache.nbytes
    payload = pickle.dumps(model)
    assert len(payload) < weights + 8192 < cached  # no cache, no gradients: the weights and a little structure
    copied = pickle.loads(payload)
    assert all(m._cache is None for m in copied.modules() if hasattr(m, "_cache"))
    assert all(not p.grad.any() for p in copied.parameters())
    for (name, a), b in zip(model.state_dict().items(), copied.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    model.eval(), copied.eval()
    np.testing.assert_array_equal(fastcnn.predict(copied, x[:16]), fastcnn.predict(model, x[:16]))
    # The original keeps its caches and gradients: pickling changed nothing in it.
    assert model[0]._cache is not None and any(p.grad.any() for p in model.parameters())


def test_a_pickled_model_keeps_modes_and_frozen_parameters_and_trains_on():
    model = _model()
    model[0].freeze()
    model.eval()
    copied = copy.deepcopy(model)
    assert not copied.training and not copied[0].weight.requires_grad and copied[6].weight.requires_grad
    copied.train()
    history = fastcnn.fit(copied, _images(32), np.arange(32) % 3, epochs=1, batch_size=8, progress=False, seed=0)
    assert len(history.epoch) == 1
    np.testing.assert_array_equal(copied[0].weight.data, model[0].weight.data)  # frozen in the copy too


# --- Dask -------------------------------------------------------------------------------------------------------

# A layer that counts how often this process unpickled one: shipped to the workers with Client.upload_file.
COUNTING_MODULE = textwrap.dedent('''
    import fastcnn

    UNPICKLED = [0]


    @fastcnn.nn.register_module
    class CountedIdentity(fastcnn.nn.Module):
        def forward(self, x):
            return x

        def backward(self, grad_output, input_grad=True):
            return grad_output

        def __setstate__(self, state):
            UNPICKLED[0] += 1
            super().__setstate__(state)
''')


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("dask.array", reason="dask is not installed: pip install \"fastcnn[dask]\"")
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed: "
                                                            "pip install \"fastcnn[dask]\"")
    folder = tmp_path_factory.mktemp("counting")
    (folder / "fastcnn_counting_layer.py").write_text(COUNTING_MODULE)
    sys.path.insert(0, str(folder))
    # Two threads per worker, so that tasks sharing a worker's copy of the model run at the same time.
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None,
                                       env={"OMP_NUM_THREADS": "1"})
    client = distributed.Client(cluster)
    client.upload_file(str(folder / "fastcnn_counting_layer.py"))
    yield client
    client.close()
    cluster.close()
    sys.path.remove(str(folder))


def test_predict_over_a_dask_array_equals_plain_predict(client):
    import dask.array as da

    model = _model().eval()
    x = _images(300)
    data = da.from_array(x, chunks=(64, 1, 4, 8))  # 5 blocks along N; the split H axis is merged back
    got = dist.predict(model, data, client, batch_size=32)
    assert got.shape == (300, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, fastcnn.predict(model, x), rtol=1e-6, atol=1e-7)


def test_predict_over_files_equals_plain_predict(client, tmp_path):
    from PIL import Image

    model = _model().eval()
    x = _images(21)
    paths = []
    for index in range(0, 20, 4):  # five batch files of 4 images
        paths.append(tmp_path / f"batch{index:02d}.npy")
        np.save(paths[-1], x[index:index + 4])
    paths.append(tmp_path / "single.npy")  # and one image alone
    np.save(paths[-1], x[20])
    got = dist.predict(model, [str(p) for p in paths], client, files_per_task=2, input_shape=(1, 8, 8))
    np.testing.assert_allclose(got, fastcnn.predict(model, x), rtol=1e-6, atol=1e-7)

    pixels = (x[:3, 0] * 255).round().astype(np.uint8)
    images = []
    for index, plane in enumerate(pixels):
        images.append(tmp_path / f"image{index}.png")
        Image.fromarray(plane).save(images[-1])
    got = dist.predict(model, images, client, input_shape=(1, 8, 8))
    np.testing.assert_allclose(got, fastcnn.predict(model, pixels[:, None] / np.float32(255)), rtol=1e-6,
                               atol=1e-7)


def test_the_model_is_shipped_to_each_worker_once(client):
    import dask.array as da
    import fastcnn_counting_layer

    model = nn.Sequential(fastcnn_counting_layer.CountedIdentity(), nn.Flatten(), nn.Linear(64, 3)).eval()
    before = client.run(lambda: __import__("fastcnn_counting_layer").UNPICKLED[0])
    x = _images(400)
    got = dist.predict(model, da.from_array(x, chunks=(25, 1, 8, 8)), client, batch_size=25)  # 16 tasks
    np.testing.assert_allclose(got, fastcnn.predict(model, x), rtol=1e-6, atol=1e-7)
    after = client.run(lambda: __import__("fastcnn_counting_layer").UNPICKLED[0])
    assert sorted(after[w] - before[w] for w in after) == [1, 1], (before, after)


@pytest.mark.parametrize("data, kwargs, error, match", [
    (np.zeros((2, 1, 8, 8)), {}, TypeError, "data must be a dask.array.Array or a list of .npy / image file paths; "
                                            "got ndarray"),
    ([], {}, ValueError, "data is an empty list of files"),
    (["a.txt"], {}, ValueError, r"data\[0\] must be a .npy file or an image"),
    (["a.png"], {}, ValueError, "image files need input_shape=\\(C, H, W\\) with C = 1 \\(grayscale\\) or 3"),
    ([3], {}, TypeError, r"data\[0\] must be a file path \(str or os.PathLike\); got int"),
    (["a.npy"], {"batch_size": 0}, ValueError, "batch_size must be an int >= 1; got 0"),
    (["a.npy"], {"files_per_task": 2.5}, TypeError, "files_per_task must be an int >= 1; got float 2.5"),
    (["a.npy"], {"input_shape": (8, 8)}, ValueError, "input_shape must be \\(C, H, W\\)"),
])
def test_predict_refuses_bad_arguments(client, data, kwargs, error, match):
    with pytest.raises(error, match=match):
        dist.predict(_model(), data, client, **kwargs)


def test_predict_refuses_a_missing_client_or_model(client):
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client; got NoneType"):
        dist.predict(_model(), ["a.npy"], None)
    with pytest.raises(TypeError, match="model must be a fastcnn.nn.Module; got str"):
        dist.predict("model.npz", ["a.npy"], client)
