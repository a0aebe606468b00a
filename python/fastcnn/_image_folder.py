"""`load_image_folder`: a folder of your own images, one sub-folder per class, as NCHW float32 arrays (Pillow reads
them). `fastcnn.datasets` re-exports it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
