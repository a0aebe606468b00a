"""fastcnn.io: one-file .npz models and checkpoints: exact round trips, atomic writes, never unpickling."""
import json
import os
import pickle
import sys

import numpy as np
import pytest

from fastcnn import io, nn
from fastcnn.optim import Adam
from fastcnn.training import predict


@nn.register_module
class ChannelScale(nn.Module):
    """A user's own layer: a learned per-channel scale with a constructor argument, registered for loading."""

    def __init__(self, channels, init=1.0):
        super().__init__()
        self.channels, self.init = channels, init
        self.weight = nn.Parameter(np.full(channels, init))
        self._x = None

    def forward(self, x):
        self._x = x if self._recording() else None
        return x * self.weight.data.reshape(1, -1, 1, 1)

    def backward(self, grad_output, input_grad=True):
        x = self._require_cache(self._x)
        self._accumulate(self.weight, (grad_output * x).sum(axis=(0, 2, 3)))
        return grad_output * self.weight.data.reshape(1, -1, 1, 1)

    def get_config(self):
        return {"channels": self.channels, "init": self.init}


class Unregistered(nn.Identity):
    pass


def make_model(seed=0):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, seed=seed), nn.BatchNorm2d(4), nn.ReLU(), ChannelScale(4, init=0.5),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3, seed=seed + 1),
    )


@pytest.fixture
def images(rng):
    return rng.standard_normal((6, 1, 8, 8)).astype(np.float32)


@pytest.fixture
def trained(images):
    """A model whose BatchNorm buffers and custom weights differ from a fresh one's."""
    model = make_model()
    model.train()
    for _ in range(3):
        model(images)
    model[3].weight.data[:] = [0.5, 1.5, -2.0, 3.0]
    return model


def rewrite(path, arrays, document):
    """Write an .npz with the given arrays and metadata document, as a tampered or foreign file would be."""
    entries = dict(arrays)
    entries["__fastcnn__"] = np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)
    np.savez(path, **entries)


def contents(path):
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "__fastcnn__"}
        document = json.loads(archive["__fastcnn__"].tobytes())
    return arrays, document


# --- round trip ---------------------------------------------------------------------------------------------------

def test_round_trip_gives_identical_predictions_buffers_and_metadata(tmp_path, trained, images):
    path = tmp_path / "model.npz"
    assert io.save(trained, path, input_shape=(1, 8, 8), class_names=["a", "b", "c"], epochs=np.int64(3),
                   notes={"data": "synthetic"}) == str(path)
    loaded = io.load(path)
    assert not loaded.training, "a rebuilt model comes back ready for inference"
    assert isinstance(loaded[3], ChannelScale) and loaded[3].init == 0.5
    original, restored = trained.state_dict(), loaded.state_dict()
    assert list(original) == list(restored)
    for key in original:
        assert original[key].dtype == restored[key].dtype and np.array_equal(original[key], restored[key]), key
    assert restored["1.num_batches_tracked"] == 3
    np.testing.assert_array_equal(predict(trained, images), predict(loaded, images))

    meta = io.load_metadata(path)
    assert meta["format_version"] == io.FORMAT_VERSION == 1
    assert meta["kind"] == "model"
    assert meta["input_shape"] == [1, 8, 8] and meta["class_names"] == ["a", "b", "c"]
    assert meta["epochs"] == 3 and meta["notes"] == {"data": "synthetic"}
    assert meta["architecture"] == nn.module_config(trained)


def test_file_is_a_plain_npz_holding_the_state_dict(tmp_path, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    arrays, document = contents(path)
    assert set(arrays) == set(trained.state_dict())
    assert document["format"] == "fastcnn"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask()), "the temp file's 0600 mode must not leak"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_replaces_an_existing_file(tmp_path, trained, images):
    path = tmp_path / "model.npz"
    io.save(make_model(seed=5), path)
    io.save(trained, path)
    np.testing.assert_array_equal(predict(io.load(path), images), predict(trained, images))
    assert os.listdir(tmp_path) == ["model.npz"]


# --- atomic writes ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_the_previous_file_and_no_temporary_files(tmp_path, monkeypatch, trained, images, failure):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    before = path.read_bytes()
    real_writer = io._write_npz

    def writer_that_fails_midway(file, arrays):
        real_writer(file, dict(list(arrays.items())[:2]))  # some bytes really reach the disk first
        raise failure

    monkeypatch.setattr(io, "_write_npz", writer_that_fails_midway)
    with pytest.raises(type(failure)):
        io.save(make_model(seed=9), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]
    np.testing.assert_array_equal(predict(io.load(path), images), predict(trained, images))


@pytest.mark.parametrize("where", ["_get_compressor", "write_array"])
def test_ctrl_c_inside_a_zip_entry_write_stays_a_keyboard_interrupt(tmp_path, trained, images, where):
    """A Ctrl-C landing while zipfile opens an entry (after it marked the archive as being written, before the
    entry's handle exists) once became `ValueError: Can't close the ZIP file while there is an open writing
    handle`, which fit does not treat as an interrupt. A trace function raises KeyboardInterrupt at that call, as
    the signal handler would."""
    path = tmp_path / "model.npz"
    io.save(trained, path)
    before = path.read_bytes()
    calls = []

    def interrupt(frame, event, arg):
        if event == "call" and frame.f_code.co_name == where:
            calls.append(where)
            if len(calls) == 2:  # the second entry: the first is already in the file
                raise KeyboardInterrupt
        return None

    sys.settrace(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            io.save(make_model(seed=9), path)
    finally:
        sys.settrace(None)
    assert len(calls) == 2 and caught.value.__context__ is None
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.npz"]
    np.testing.assert_array_equal(predict(io.load(path), images), predict(trained, images))


def test_failed_write_of_array_data_leaves_no_new_file(tmp_path, monkeypatch, trained):
    def refuse(*args, **kwargs):
        raise OSError("I/O error")

    monkeypatch.setattr(np.lib.format, "write_array", refuse)
    with pytest.raises(OSError, match="I/O error"):
        io.save(trained, tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


# --- damaged and foreign files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "half", "empty", "garbage", "flipped", "npy", "text"])
def test_damaged_or_foreign_file_is_a_clear_error_naming_it(tmp_path, trained, damage):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-20])
    elif damage == "half":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif damage == "flipped":  # inside the first array's data: the zip's CRC catches it
        path.write_bytes(data[:150] + bytes(b ^ 0xFF for b in data[150:250]) + data[250:])
    elif damage == "npy":
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path = path.with_suffix(".npy")
    else:
        path.write_text("weights = [1, 2, 3]\n")
    with pytest.raises(ValueError, match=r"load: .*model\.np[yz].* is not a readable fastcnn file"):
        io.load(path)
    if damage != "flipped":  # load_metadata reads only the metadata entry, not the damaged array
        with pytest.raises(ValueError, match="not a readable fastcnn file"):
            io.load_metadata(path)


def test_npz_without_fastcnn_metadata_is_refused(tmp_path, trained):
    path = tmp_path / "weights.npz"
    np.savez(path, **trained.state_dict())
    with pytest.raises(ValueError, match=r"weights\.npz.* has no '__fastcnn__' entry"):
        io.load(path)


def test_metadata_that_is_not_json_is_refused(tmp_path, trained):
    path = tmp_path / "model.npz"
    np.savez(path, __fastcnn__=np.frombuffer(b"{not json", dtype=np.uint8), **trained.state_dict())
    with pytest.raises(ValueError, match="metadata is not valid JSON"):
        io.load(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.load("/nonexistent/model.npz")


def test_newer_format_version_is_refused(tmp_path, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    arrays, document = contents(path)
    rewrite(path, arrays, dict(document, format_version=2))
    with pytest.raises(ValueError, match=r"format version 2, newer than the versions this fastcnn reads \(up to 1\); "
                                         r"upgrade fastcnn"):
        io.load(path)
    with pytest.raises(ValueError, match="format version 2"):
        io.load_metadata(path)


def test_object_arrays_are_refused_and_pickle_is_never_used(tmp_path, monkeypatch, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    arrays, document = contents(path)
    arrays["0.weight"] = np.array([{"payload": "os.system"}], dtype=object)
    rewrite(path, arrays, document)  # np.savez pickles the object array

    def no_unpickling(*args, **kwargs):
        raise AssertionError("fastcnn.io must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(ValueError, match=r"entry '0\.weight' holds pickled Python objects, which fastcnn never loads"):
        io.load(path)


def test_unknown_class_in_the_architecture_is_refused(tmp_path, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    arrays, document = contents(path)
    document["architecture"]["config"]["layers"][2]["class"] = "EvilLayer"
    rewrite(path, arrays, document)
    with pytest.raises(ValueError, match=r"cannot rebuild the model: .*unknown module class 'EvilLayer'"):
        io.load(path)


# --- keys and shapes ----------------------------------------------------------------------------------------------

def test_missing_key_is_refused_naming_it(tmp_path, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    arrays, document = contents(path)
    del arrays["6.bias"]
    rewrite(path, arrays, document)
    with pytest.raises(ValueError, match=r"model\.npz.*missing from the checkpoint: 6\.bias"):
        io.load(path)


def test_unexpected_key_is_refused_naming_it(tmp_path, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    arrays, document = contents(path)
    arrays["7.weight"] = np.zeros(3, np.float32)
    rewrite(path, arrays, document)
    with pytest.raises(ValueError, match=r"unexpected in the checkpoint: 7\.weight"):
        io.load(path)
    assert isinstance(io.load(path, strict=False), nn.Sequential)


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    arrays, document = contents(path)
    arrays["0.weight"] = np.zeros((4, 1, 5, 5), np.float32)
    rewrite(path, arrays, document)
    with pytest.raises(ValueError, match=r"size mismatch for 0\.weight: checkpoint has \(4, 1, 5, 5\), model has "
                                         r"\(4, 1, 3, 3\)"):
        io.load(path)


def test_load_into_an_existing_model_strict_and_not(tmp_path, trained):
    """Transfer learning: the saved features load into a model with a different head when strict=False."""
    path = tmp_path / "model.npz"
    io.save(trained, path)
    bigger = nn.Sequential(*list(make_model(seed=7)), nn.ReLU(), nn.Linear(3, 5, seed=3))
    before_head = bigger[8].weight.data.copy()
    with pytest.raises(ValueError, match=r"missing from the checkpoint: 8\.weight, 8\.bias"):
        io.load(path, model=bigger)
    bigger.train()
    assert io.load(path, model=bigger, strict=False) is bigger
    assert bigger.training, "a given model keeps its mode"
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(bigger.state_dict()[key], value)
    np.testing.assert_array_equal(bigger[8].weight.data, before_head)


def test_load_shape_mismatch_into_existing_model(tmp_path, trained):
    path = tmp_path / "model.npz"
    io.save(trained, path)
    other = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1))
    with pytest.raises(ValueError, match=r"size mismatch for 0\.weight: checkpoint has \(4, 1, 3, 3\), model has "
                                         r"\(6, 1, 3, 3\)"):
        io.load(path, model=other, strict=False)


# --- arguments ----------------------------------------------------------------------------------------------------

def test_save_argument_errors(tmp_path, trained):
    with pytest.raises(TypeError, match="save: model must be a fastcnn.nn.Module; got OrderedDict"):
        io.save(trained.state_dict(), tmp_path / "m.npz")
    with pytest.raises(TypeError, match=r"save: module_config: Unregistered is not registered"):
        io.save(nn.Sequential(Unregistered()), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="metadata key 'architecture' is reserved"):
        io.save(trained, tmp_path / "m.npz", architecture="mine")
    with pytest.raises(TypeError, match="metadata 'callback' must be JSON-serialisable"):
        io.save(trained, tmp_path / "m.npz", callback=print)
    with pytest.raises(ValueError, match=r"input_shape must be a sequence of positive ints .* got \(1, 0, 8\)"):
        io.save(trained, tmp_path / "m.npz", input_shape=(1, 0, 8))
    with pytest.raises(ValueError, match="class_names must be a list of strings"):
        io.save(trained, tmp_path / "m.npz", class_names="abc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.save(trained, tmp_path / "missing" / "m.npz")
    with pytest.raises(IsADirectoryError):
        io.save(trained, tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike; got int"):
        io.save(trained, 3)
    assert os.listdir(tmp_path) == []


# --- checkpoints --------------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path, trained, images):
    optimizer = Adam(trained.parameters(), lr=0.01)
    trained.train()
    for _ in range(2):
        trained.zero_grad()
        out = trained(images)
        trained.backward(np.ones_like(out) / out.size)
        optimizer.step()
    path = tmp_path / "ckpt.npz"
    rng_state = {"shuffle": np.random.default_rng(3).bit_generator.state}
    io.save_checkpoint(path, trained, optimizer, epoch=4, rng_state=rng_state,
                       callbacks_state=[{"class": "X", "state": {"best": 0.5}}], run="a")
    checkpoint = io.load_checkpoint(path)
    assert checkpoint["epoch"] == 4
    assert checkpoint["optimizer_class"] == "Adam"
    assert checkpoint["rng_state"] == rng_state
    assert checkpoint["callbacks_state"] == [{"class": "X", "state": {"best": 0.5}}]
    assert checkpoint["metadata"]["run"] == "a" and checkpoint["metadata"]["kind"] == "checkpoint"
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(checkpoint["model_state"][key], value)

    fresh = Adam(make_model(seed=1).parameters(), lr=0.5)
    fresh.load_state_dict(checkpoint["optimizer_state"])
    saved, restored = optimizer.state_dict(), fresh.state_dict()
    assert saved["param_groups"] == json.loads(json.dumps(restored["param_groups"]))
    for key in saved:
        if key != "param_groups":
            np.testing.assert_array_equal(restored[key], saved[key])

    # a checkpoint is also a model file
    trained.eval()
    np.testing.assert_array_equal(predict(io.load(path), images), predict(trained, images))


def test_load_checkpoint_refuses_a_model_file(tmp_path, trained):
    io.save(trained, tmp_path / "model.npz")
    with pytest.raises(ValueError, match="is a model file, not a checkpoint"):
        io.load_checkpoint(tmp_path / "model.npz")


def test_checkpoint_of_an_unregistered_model_loads_into_a_given_model(tmp_path, images):
    model = nn.Sequential(Unregistered(), nn.Flatten(), nn.Linear(64, 2, seed=0))
    io.save_checkpoint(tmp_path / "ckpt.npz", model, epoch=1)
    with pytest.raises(ValueError, match=r"holds no architecture .* pass it as load\(path, model=...\)"):
        io.load(tmp_path / "ckpt.npz")
    twin = nn.Sequential(Unregistered(), nn.Flatten(), nn.Linear(64, 2, seed=1))
    io.load(tmp_path / "ckpt.npz", model=twin)
    np.testing.assert_array_equal(predict(twin, images), predict(model, images))


def test_save_checkpoint_argument_errors(tmp_path, trained):
    with pytest.raises(ValueError, match="epoch must be a non-negative int; got -1"):
        io.save_checkpoint(tmp_path / "c.npz", trained, epoch=-1)
    with pytest.raises(TypeError, match="optimizer must have a state_dict"):
        io.save_checkpoint(tmp_path / "c.npz", trained, optimizer=object(), epoch=1)


# --- PyTorch interoperability ----------------------------------------------------------------------------------

def test_pytorch_state_dict_converted_to_numpy_loads_with_identical_outputs(tmp_path, images):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    torch.manual_seed(0)
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 2 * 2, 5), torch.nn.BatchNorm1d(5),
    )
    with torch.no_grad():
        for _ in range(3):  # give BatchNorm running statistics worth transferring
            reference(torch.from_numpy(images) * 2 + 1)
    reference.eval()
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}

    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 2 * 2, 5), nn.BatchNorm1d(5),
    )
    assert model.load_state_dict(state) == {"missing_keys": [], "unexpected_keys": []}
    model.eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(model(images), expected, rtol=1e-5, atol=1e-5)

    io.save(model, tmp_path / "ported.npz")
    np.testing.assert_array_equal(io.load(tmp_path / "ported.npz")(images), model(images))
