"""IDX files, the format of MNIST and Fashion-MNIST: `read_idx` reads and validates one (raw or gzipped), and
`_read_split` turns an images file and a labels file into a dataset split. `fastcnn.datasets` re-exports `read_idx`.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

# A header may declare any size; refusing more than this keeps a corrupt or crafted file from allocating
# gigabytes (the largest file here, MNIST's training images, holds 47 MB).
_MAX_IDX_BYTES = 256 * 2**20
_CHUNK = 1 << 20


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
