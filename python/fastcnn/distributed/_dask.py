"""Batch inference over a Dask cluster: the model goes to each worker once, workers read their own data, the
probabilities come back in the data's order.

dask and distributed are imported inside the functions: `fastcnn.distributed` loads without them.
"""
from __future__ import annotations

import copy
import os

import numpy as np

from .._batches import _check_int
from ..nn.module import Module

__all__ = ["predict"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _check_input_shape(input_shape):
    if input_shape is None:
        return None
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in input_shape)):
        raise ValueError(f"predict: input_shape must be (C, H, W), three positive ints; got {input_shape!r}")
    return tuple(int(s) for s in input_shape)


def _check_paths(data, input_shape):
    paths = []
    for index, path in enumerate(data):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"predict: data[{index}] must be a file path (str or os.PathLike); got "
                            f"{type(path).__name__}")
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix != ".npy" and suffix not in _IMAGE_SUFFIXES:
            raise ValueError(f"predict: data[{index}] must be a .npy file or an image "
                             f"({', '.join(_IMAGE_SUFFIXES)}); got {path!r}")
        if suffix in _IMAGE_SUFFIXES and (input_shape is None or input_shape[0] not in (1, 3)):
            raise ValueError(f"predict: image files need input_shape=(C, H, W) with C = 1 (grayscale) or 3 (RGB), "
                             f"the size they are converted to; got input_shape={input_shape!r} for {path!r}")
        paths.append(path)
    if not paths:
        raise ValueError("predict: data is an empty list of files")
    return paths


def predict(model, data, client, *, batch_size: int = 256, files_per_task: int = 64, input_shape=None) -> np.ndarray:
    """Class probabilities (N, classes), float32, of `model` over `data`, computed by the workers of a Dask cluster;
    equal, up to float32 rounding, to `fastcnn.predict(model, x)` on the whole data (the kernels may sum in another
    order for another batch size, so the last bits can differ).

    The model is scattered once to every worker (a copy in eval mode; it pickles to its architecture and weights
    only) and each task refers to that copy. Workers read their own data: the blocks of a Dask array are computed
    where the tasks run (an array built with `da.from_zarr` or `da.from_npy_stack` never passes through this
    process), and files are opened by the worker that predicts them. Results come back in the order of the data.

    Args:
        model: a `fastcnn.nn.Module` producing logits (N, classes).
        data: a `dask.array.Array` of shape (N, C, H, W), chunked along N (other axes are merged into one chunk);
            or a list of paths readable by the workers: `.npy` files each holding one image (C, H, W) or a batch
            (n, C, H, W), or image files (PNG, JPEG, ...) read with Pillow, converted to input_shape's channels
            (C = 1 grayscale, 3 RGB) and size, and scaled to [0, 1].
        client: a `dask.distributed.Client`.
        batch_size: images per forward pass on a worker. Default: 256.
        files_per_task: files read and predicted by one task, for a list of files. Default: 64.
        input_shape: (C, H, W) of one image; required for image files, checked against .npy files. Default: None.

    Returns:
        a NumPy array (N, classes): one row per image, in the order of the data (a batch file's rows in place).

    Example:
        >>> from dask.distributed import Client
        >>> client = Client("tcp://scheduler:8786")
        >>> probabilities = fastcnn.distributed.predict(model, sorted(glob.glob("/shared/scans/*.npy")), client)
    """
    if not isinstance(model, Module):
        raise TypeError(f"predict: model must be a fastcnn.nn.Module; got {type(model).__name__}")
    if not (callable(getattr(client, "scatter", None)) and callable(getattr(client, "compute", None))):
        raise TypeError(f"predict: client must be a dask.distributed.Client; got {type(client).__name__}")
    batch_size = _check_int(batch_size, "batch_size", "predict", 1)
    files_per_task = _check_int(files_per_task, "files_per_task", "predict", 1)
    input_shape = _check_input_shape(input_shape)
    import dask

    # A copy in eval mode: tasks running at once in one worker's threads share the object, and fastcnn.predict's
    # switch to eval mode and back would otherwise race between them.
    shipped = copy.deepcopy(model).eval()
    if isinstance(data, (list, tuple)):
        paths = _check_paths(data, input_shape)
        model_future = client.scatter(shipped, broadcast=True, hash=False)
        groups = [paths[start:start + files_per_task] for start in range(0, len(paths), files_per_task)]
        tasks = [dask.delayed(_predict_files, pure=False)(model_future, group, batch_size, input_shape)
                 for group in groups]
    elif _is_dask_array(data):
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"predict: data must be a Dask array of shape (N, C, H, W) with N >= 1; got shape "
                             f"{data.shape}")
        if data.dtype.kind not in "biuf":
            raise TypeError(f"predict: data must hold numbers; got dtype {data.dtype}")
        if input_shape is not None and tuple(data.shape[1:]) != input_shape:
            raise ValueError(f"predict: data's images have shape {tuple(data.shape[1:])}; input_shape is "
                             f"{input_shape}")
        data = data.rechunk({axis: -1 for axis in range(1, data.ndim)})
        model_future = client.scatter(shipped, broadcast=True, hash=False)
        tasks = [dask.delayed(_predict_array, pure=False)(model_future, block, batch_size)
                 for block in data.to_delayed().ravel()]
    else:
        raise TypeError(f"predict: data must be a dask.array.Array or a list of .npy / image file paths; got "
                        f"{type(data).__name__} (for a NumPy array in memory use fastcnn.predict)")
    try:
        results = client.gather(client.compute(tasks))
    finally:
        client.cancel([model_future])  # the workers' copies go once the results are in
    return np.concatenate(results)


def _is_dask_array(data) -> bool:
    try:
        import dask.array as da
    except ImportError:
        return False
    return isinstance(data, da.Array)


# --- on the workers --------------------------------------------------------------------------------------------

def _predict_array(model, block, batch_size: int) -> np.ndarray:
    from ..training import predict
    return predict(model, block, batch_size=batch_size)


def _predict_files(model, paths, batch_size: int, input_shape) -> np.ndarray:
    from ..training import predict
    return predict(model, np.concatenate([_read_file(path, input_shape) for path in paths]), batch_size=batch_size)


def _read_file(path: str, input_shape) -> np.ndarray:
    """One file as a float32 batch (n, C, H, W)."""
    if path.lower().endswith(".npy"):
        array = np.load(path, allow_pickle=False)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or (input_shape is not None and tuple(array.shape[1:]) != input_shape):
            expected = "(C, H, W)" if input_shape is None else str(input_shape)
            raise ValueError(f"predict: {path!r} must hold one image {expected} or a batch (n, C, H, W) of them; got "
                             f"shape {array.shape}")
        return np.ascontiguousarray(array, dtype=np.float32)
    from PIL import Image

    channels, height, width = input_shape
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
    return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))[None]
