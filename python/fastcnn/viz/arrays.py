"""What the pictures show, as NumPy arrays: kernel grids, feature maps, pooling, confusion counts, saliency.

These functions need only NumPy, so every front end (the matplotlib plots in `fastcnn.viz.plots`, the browser
demo, a notebook) draws the same numbers. They are deterministic and change nothing: models run in eval mode
inside `fastcnn.no_grad()`, and every module's train/eval mode is restored afterwards. Switching modes is visible
to other threads, so inspect a copy (or hold a lock) rather than a model another thread is training.

Layers are addressed as `layer=`:
    - an int: the index of a top-level layer of a Sequential model (negative counts from the end);
    - a str: the dotted name from `model.named_modules()`, such as '0' or 'features.0';
    - a Module: a layer of the model (compared by identity);
    - None: a default stated by each function (the first Conv2d, the first pooling layer).
Every container on the way from the model to the layer must be a Sequential, so that the layers before it can run.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .. import _grad_mode, nn
from ..nn.parameter import Parameter

__all__ = [
    "Grid",
    "GAP_VALUE",
    "to_uint8",
    "filters_grid",
    "feature_maps",
    "maps_grid",
    "pooled_maps",
    "confusion_matrix",
    "history_arrays",
    "saliency_map",
]

GAP_VALUE = 255  # the pixels between tiles: white, like a figure's background
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


class Grid(NamedTuple):
    """A tiled uint8 image and the values its darkest (0) and brightest (255) pixels stand for.

    Unpacks as `image, vmin, vmax = filters_grid(conv)`.
    """

    image: np.ndarray
    vmin: float
    vmax: float


# --------------------------------------------------------------------------------------------------- checks

def _finite(value, name: str, fn: str, dtype=np.float64) -> np.ndarray:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be an array of numbers; got {value!r}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{fn}: {name} must be an array of numbers; could not convert it: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must hold numbers; got dtype {array.dtype}")
    array = np.asarray(array, dtype=dtype)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{fn}: {name} holds NaN or infinite values")
    return array


def _positive_int(value, name: str, fn: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int; got {value!r}")
    return int(value)


def _non_negative_int(value, name: str, fn: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{fn}: {name} must be an int >= 0; got {value!r}")
    return int(value)


def _check_model(model, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a fastcnn.nn.Module; got {type(model).__name__}")


def _as_image(image, fn: str) -> np.ndarray:
    """One image as float32 (C, H, W); (H, W) means one channel."""
    array = _finite(image, "image", fn, np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.size == 0:
        raise ValueError(f"{fn}: expected one image of shape (C, H, W) or (H, W); got shape {array.shape}"
                         + (" (for a batch, pass one image such as x[0])" if array.ndim == 4 else ""))
    return np.ascontiguousarray(array)


def _as_batch(x, fn: str) -> np.ndarray:
    array = _finite(x, "x", fn, np.float32)
    if array.ndim != 4 or array.shape[0] == 0 or array.size == 0:
        raise ValueError(f"{fn}: expected x of shape (N, C, H, W) with N >= 1; got shape {array.shape}")
    return np.ascontiguousarray(array)


def _labels(y, name: str, fn: str, count: int | None = None, classes: int | None = None) -> np.ndarray:
    array = np.asarray(y)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise ValueError(f"{fn}: {name} must be a 1-D array of integer class labels; got dtype {array.dtype} "
                         f"and shape {array.shape}")
    if count is not None and array.shape[0] != count:
        raise ValueError(f"{fn}: {name} holds {array.shape[0]} labels for {count} images")
    if classes is not None and array.size and (array.min() < 0 or array.max() >= classes):
        bad = array[(array < 0) | (array >= classes)][0]
        raise ValueError(f"{fn}: {name} must hold labels in [0, {classes}) for {classes} classes; got {bad}")
    return array.astype(np.int64)


def _check_channels(model, image: np.ndarray, fn: str) -> None:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != image.shape[0]:
        raise ValueError(f"{fn}: the image has {image.shape[0]} channel(s) but the model's first Conv2d expects "
                         f"{first.in_channels}; got image shape {image.shape}")


# --------------------------------------------------------------------------------------------- running layers

@contextlib.contextmanager
def _evaluation(model):
    """Eval mode inside no_grad; restores every module's own mode (a frozen part may already be in eval)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with _grad_mode.no_grad():
            yield
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)


def _name(path) -> str:
    return ".".join(path) if path else "(the model)"


def _layer_path(model, layer, fn: str) -> list[str]:
    """The names leading from `model` to `layer` (see the module docstring for the forms `layer` takes)."""
    if isinstance(layer, (bool, np.bool_)):
        raise TypeError(f"{fn}: layer must be an int index, a name or a Module; got {layer!r}")
    if isinstance(layer, (int, np.integer)):
        if not isinstance(model, nn.Sequential):
            raise ValueError(f"{fn}: a layer index needs a Sequential model; name the layer instead (one of "
                             f"{', '.join(n for n, _ in model.named_modules() if n)})")
        names = list(model._modules)
        if not -len(names) <= layer < len(names):
            raise ValueError(f"{fn}: layer index {layer} is out of range for a model of {len(names)} layers")
        return [names[int(layer)]]
    if isinstance(layer, str):
        known = [name for name, _ in model.named_modules() if name]
        if layer not in known:
            raise ValueError(f"{fn}: the model has no layer named {layer!r}; its layers are {', '.join(known)}")
        return layer.split(".")
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name.split(".") if name else []
        raise ValueError(f"{fn}: the layer {type(layer).__name__} given is not part of the model")
    raise TypeError(f"{fn}: layer must be an int index, a name or a Module; got {type(layer).__name__}")


def _module_at(model, path) -> nn.Module:
    module = model
    for name in path:
        module = module._modules[name]
    return module


def _first_path(model, kinds, what: str, fn: str) -> list[str]:
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            return name.split(".") if name else []
    raise ValueError(f"{fn}: the model has no {what} layer; pass layer= to choose one")


def _run(module, path, x, fn: str):
    """(input, output) of the layer at `path`, running only the layers before it."""
    if not path:
        return x, module(x)
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"{fn}: cannot run the layers before {'.'.join(path)!r}: they sit in a "
                         f"{type(module).__name__}, and only layers reached through Sequential containers can be shown")
    for name, child in module._modules.items():
        if name == path[0]:
            return _run(child, path[1:], x, fn)
        x = child(x)
    raise AssertionError("unreachable: _layer_path checked the path")


def _run_checked(model, path, x, fn: str):
    with _evaluation(model):
        try:
            return _run(model, path, x, fn)
        except ValueError as error:
            if str(error).startswith(f"{fn}:"):
                raise
            raise ValueError(f"{fn}: the model cannot take input of shape {x.shape[1:]}: {error}") from None


def _logits(model, x: np.ndarray, fn: str, batch_size: int = 256) -> np.ndarray:
    """The model's outputs (N, classes) as float64, in eval mode inside no_grad."""
    outputs = [_run_checked(model, [], x[start:start + batch_size], fn)[1]
               for start in range(0, x.shape[0], batch_size)]
    logits = np.concatenate([np.asarray(o, dtype=np.float64) for o in outputs])
    if logits.ndim != 2:
        raise ValueError(f"{fn}: the model must output logits of shape (N, classes); got {logits.shape}")
    return logits


# ------------------------------------------------------------------------------------------------ images

def to_uint8(array, vmin=None, vmax=None) -> np.ndarray:
    """Map values linearly so that vmin -> 0 and vmax -> 255, clip, and round half up; same shape, uint8.

    Args:
        array: finite numbers.
        vmin, vmax: the values for black and white. Default: the array's minimum and maximum.

    When vmin == vmax (a constant map), values <= vmin give 0 and larger ones 255.

    Example:
        >>> to_uint8([-1.0, 0.0, 1.0])
        array([  0, 128, 255], dtype=uint8)
    """
    fn = "to_uint8"
    values = _finite(array, "array", fn)
    if values.size == 0 and (vmin is None or vmax is None):
        raise ValueError(f"{fn}: array is empty; pass vmin and vmax or a non-empty array")
    low = float(values.min()) if vmin is None else float(vmin)
    high = float(values.max()) if vmax is None else float(vmax)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{fn}: vmin and vmax must be finite with vmin <= vmax; got vmin={vmin!r}, vmax={vmax!r}")
    scaled = (values - low) / (high - low) if high > low else (values > high).astype(np.float64)
    return np.floor(np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _tile(tiles: np.ndarray, columns: int, padding: int) -> np.ndarray:
    """Tiles (n, h, w[, 3]) uint8 laid out row by row, `columns` per row, `padding` GAP_VALUE pixels between."""
    count, height, width = tiles.shape[:3]
    rows = -(-count // columns)
    shape = (rows * height + (rows - 1) * padding, columns * width + (columns - 1) * padding) + tiles.shape[3:]
    image = np.full(shape, GAP_VALUE, dtype=np.uint8)
    for index in range(count):
        top, left = (index // columns) * (height + padding), (index % columns) * (width + padding)
        image[top:top + height, left:left + width] = tiles[index]
    return image


def _default_columns(count: int) -> int:
    return math.ceil(math.sqrt(count))


def _weight_of(source, layer, fn: str) -> np.ndarray:
    """The (C_out, C_in, kH, kW) weight of an array, Parameter, Conv2d or a model's Conv2d."""
    if isinstance(source, nn.Module) and not isinstance(source, nn.Conv2d):
        path = _first_path(source, nn.Conv2d, "Conv2d", fn) if layer is None else _layer_path(source, layer, fn)
        source = _module_at(source, path)
        if not isinstance(source, nn.Conv2d):
            raise ValueError(f"{fn}: layer {_name(path)!r} is a {type(source).__name__}, not a Conv2d; filters "
                             f"exist only in convolution layers")
    elif layer is not None:
        raise ValueError(f"{fn}: layer= applies only to a model; got it with a {type(source).__name__}")
    if isinstance(source, nn.Conv2d):
        source = source.weight
    if isinstance(source, Parameter):
        source = source.data
    if not isinstance(source, (np.ndarray, list, tuple)):
        raise TypeError(f"{fn}: expected a weight array (C_out, C_in, kH, kW), a Conv2d or a model; "
                        f"got {type(source).__name__}")
    weight = _finite(source, "weight", fn)
    if weight.ndim != 4 or weight.size == 0:
        raise ValueError(f"{fn}: expected a weight of shape (C_out, C_in, kH, kW); got shape {weight.shape}")
    return weight


def filters_grid(source, layer=None, *, padding: int = 1, scale: int = 1, columns: int | None = None) -> Grid:
    """The convolution kernels as one uint8 image, on one colour scale symmetric around 0.

    Every weight w maps to round_half_up(255 * (w + s) / (2 s)) with s = max |w| over the whole layer (s = 1 when
    every weight is 0), so 0 is mid-grey (128), -s black and +s white in every tile, and tiles compare directly.
    Tiles are separated by `padding` pixels of GAP_VALUE (255).

    Layouts, for a weight (C_out, C_in, kH, kW):
        - C_in == 1: one (kH, kW) tile per filter, `columns` per row (default ceil(sqrt(C_out))), row by row;
          image (H, W).
        - C_in == 3: one RGB (kH, kW, 3) tile per filter, laid out the same way; image (H, W, 3).
        - otherwise: one tile per (output, input) channel pair, row o holding filter o's C_in kernels;
          image (H, W). `columns` must then be None.

    Args:
        source: a weight array, a Parameter, a Conv2d, or a model (its first Conv2d unless `layer` says).
        layer: which layer of a model (index, dotted name or Module). Default: the first Conv2d.
        padding: pixels between tiles. Default: 1.
        scale: each weight becomes a scale x scale block of pixels. Default: 1.
        columns: tiles per row for the one-tile-per-filter layouts.

    Returns:
        Grid(image, vmin=-s, vmax=s).

    Example:
        >>> image, vmin, vmax = filters_grid(np.array([[[[1.0]]], [[[-0.5]]]]))
        >>> image, vmin, vmax
        (array([[255, 255,  64]], dtype=uint8), -1.0, 1.0)
    """
    return _filters_grid(_weight_of(source, layer, "filters_grid"), padding, scale, columns, "filters_grid")


def _filters_grid(weight: np.ndarray, padding, scale, columns, fn: str) -> Grid:
    padding = _non_negative_int(padding, "padding", fn)
    scale = _positive_int(scale, "scale", fn)
    count, inputs = weight.shape[:2]
    bound = float(np.abs(weight).max()) or 1.0
    pixels = to_uint8(weight, -bound, bound).repeat(scale, axis=2).repeat(scale, axis=3)
    if inputs in (1, 3):
        columns = _default_columns(count) if columns is None else _positive_int(columns, "columns", fn)
        tiles = pixels[:, 0] if inputs == 1 else pixels.transpose(0, 2, 3, 1)
    else:
        if columns is not None:
            raise ValueError(f"{fn}: columns applies to one tile per filter (C_in 1 or 3); this weight has "
                             f"C_in={inputs}, shown as one row per filter with a column per input channel")
        columns, tiles = inputs, pixels.reshape(count * inputs, *pixels.shape[2:])
    return Grid(_tile(tiles, columns, padding), -bound, bound)


def maps_grid(maps, columns: int | None = None, *, padding: int = 1, normalize: str = "per_map") -> np.ndarray:
    """Feature maps (C, h, w) tiled into one uint8 image (H, W), map c at row c // columns, column c % columns.

    Args:
        maps: float array (C, h, w), or (h, w) for one map.
        columns: maps per row. Default: ceil(sqrt(C)).
        padding: GAP_VALUE (255) pixels between tiles. Default: 1.
        normalize: "per_map" stretches each map from its own minimum (0) to its maximum (255), which shows the
            pattern of weak maps too; "shared" uses the minimum and maximum over all maps, which shows which maps
            are strong. A constant map is 0. Default: "per_map".

    Example:
        >>> maps_grid(np.array([[[0.0, 2.0]], [[1.0, 1.0]]]), columns=1)
        array([[  0, 255],
               [255, 255],
               [  0,   0]], dtype=uint8)
    """
    fn = "maps_grid"
    values = _finite(maps, "maps", fn)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or values.size == 0:
        raise ValueError(f"{fn}: expected maps of shape (C, h, w) or (h, w); got shape {values.shape}")
    columns = _default_columns(values.shape[0]) if columns is None else _positive_int(columns, "columns", fn)
    padding = _non_negative_int(padding, "padding", fn)
    if normalize == "per_map":
        tiles = np.stack([to_uint8(m) for m in values])
    elif normalize == "shared":
        tiles = to_uint8(values)
    else:
        raise ValueError(f"{fn}: normalize must be 'per_map' or 'shared'; got {normalize!r}")
    return _tile(tiles, columns, padding)


# ------------------------------------------------------------------------------------------------ activations

def _layer_io(model, image, layer, kinds, what: str, fn: str):
    _check_model(model, fn)
    x = _as_image(image, fn)
    _check_channels(model, x, fn)
    path = _first_path(model, kinds, what, fn) if layer is None else _layer_path(model, layer, fn)
    return path, x


def feature_maps(model, image, layer=None) -> np.ndarray:
    """The output of one layer for one image: float32 (C, h, w), a copy.

    Runs the layers before it (and it) in eval mode inside `fastcnn.no_grad()`: nothing is recorded, no buffer
    changes, and every module's mode is restored.

    Args:
        model: a Sequential (or a model whose path to the layer goes through Sequentials).
        image: (C, H, W), or (H, W) for one channel.
        layer: an index, a dotted name or a Module (see the module docstring). Default: the first Conv2d.

    Raises:
        ValueError: a layer out of range or unknown, an image the model cannot take, or a layer whose output is
            not feature maps (Flatten, Linear).

    Example:
        >>> feature_maps(model, x_test[0], layer=1).shape   # after the first ReLU
        (32, 28, 28)
    """
    return _feature_maps(model, image, layer, "feature_maps")[0]


def _feature_maps(model, image, layer, fn: str):
    """(maps, path to the layer)."""
    path, x = _layer_io(model, image, layer, nn.Conv2d, "Conv2d", fn)
    output = np.asarray(_run_checked(model, path, x[None], fn)[1])
    if output.ndim != 4:
        raise ValueError(f"{fn}: layer {_name(path)!r} ({type(_module_at(model, path)).__name__}) outputs shape "
                         f"{output.shape}, not feature maps (N, C, H, W); choose a convolution, activation or "
                         f"pooling layer")
    return np.array(output[0], dtype=np.float32), path


def _pool_path(model, path, fn: str) -> list[str]:
    """`path` itself when it names a pooling layer, else the first pooling layer that runs after it: a later
    sibling in its Sequential, else one after the enclosing Sequential in its parent, and so on outwards."""
    module = _module_at(model, path)
    if isinstance(module, _POOLS):
        return path
    for depth in range(len(path), 0, -1):
        parent = _module_at(model, path[:depth - 1])
        if not isinstance(parent, nn.Sequential):
            break
        names = list(parent._modules)
        for name in names[names.index(path[depth - 1]) + 1:]:
            if isinstance(parent._modules[name], _POOLS):
                return path[:depth - 1] + [name]
    raise ValueError(f"{fn}: no MaxPool2d or AvgPool2d follows layer {_name(path)!r} ({type(module).__name__})")


def pooled_maps(model, image, layer=None) -> tuple[np.ndarray, np.ndarray]:
    """The maps entering a pooling layer and leaving it, for one image: (before, after), float32 (C, h, w) each.

    Args:
        model, image: as `feature_maps`.
        layer: a pooling layer, or a layer that one follows (a Conv2d or its ReLU): the first MaxPool2d or
            AvgPool2d that runs after it is shown. Default: the model's first pooling layer.

    Example:
        >>> before, after = pooled_maps(model, x_test[0], layer=0)
        >>> before.shape, after.shape
        ((32, 28, 28), (32, 14, 14))
    """
    before, after, _ = _pooled_maps(model, image, layer, "pooled_maps")
    return before, after


def _pooled_maps(model, image, layer, fn: str):
    """(before, after, path to the pooling layer)."""
    path, x = _layer_io(model, image, layer, _POOLS, "MaxPool2d or AvgPool2d", fn)
    path = _pool_path(model, path, fn)
    before, after = _run_checked(model, path, x[None], fn)
    return np.array(before[0], dtype=np.float32), np.array(after[0], dtype=np.float32), path


# ------------------------------------------------------------------------------------------------- results

def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes) int64: entry [t, p] counts the images of class t predicted as p.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2)
        array([[1, 0],
               [1, 1]])
    """
    fn = "confusion_matrix"
    classes = _positive_int(num_classes, "num_classes", fn)
    truth = _labels(y_true, "y_true", fn, classes=classes)
    predicted = _labels(y_pred, "y_pred", fn, count=truth.shape[0], classes=classes)
    counts = np.bincount(truth * classes + predicted, minlength=classes * classes)
    return counts.reshape(classes, classes).astype(np.int64)


def history_arrays(history) -> dict[str, list[float]]:
    """Per-epoch lists for learning curves from a `fastcnn.training.History` or its `.history` dict.

    Returns:
        {"epoch": [1, 2, ...], "loss": [...], "accuracy": [...], ...}: every key of the history as a list of
        floats (None becomes NaN), plus "epoch" counted from 1 (a resumed History's own epoch numbers + 1).
    """
    fn = "history_arrays"
    records = getattr(history, "history", history)
    if not isinstance(records, Mapping):
        raise TypeError(f"{fn}: expected a History or a dict of per-epoch lists; got {type(history).__name__}")
    curves = {}
    for key, values in records.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise ValueError(f"{fn}: history[{key!r}] must be a list of per-epoch numbers; got {values!r}")
        try:
            curves[str(key)] = [math.nan if v is None else float(v) for v in values]
        except (TypeError, ValueError):
            raise ValueError(f"{fn}: history[{key!r}] must hold numbers; got {list(values)!r}") from None
    length = max((len(v) for v in curves.values()), default=0)
    epochs = list(getattr(history, "epoch", []) or [])
    curves.pop("epoch", None)
    first = [e + 1 for e in epochs] if len(epochs) == length else list(range(1, length + 1))
    return {"epoch": first, **curves}


def _saliency(model, image, target, fn: str):
    from ..training import input_gradient  # training imports io and callbacks: load it only when needed

    _check_model(model, fn)
    x = _as_image(image, fn)
    _check_channels(model, x, fn)
    logits = _logits(model, x[None], fn)[0]
    if target is None:
        target = int(np.argmax(logits))
    elif (isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer))
          or not 0 <= target < logits.shape[0]):
        raise ValueError(f"{fn}: target must be a class index in [0, {logits.shape[0]}); got {target!r}")
    gradient = input_gradient(model, x[None], int(target))[0]
    magnitude = np.abs(gradient.astype(np.float64)).max(axis=0)
    peak = magnitude.max()
    return (magnitude / peak if peak > 0 else magnitude).astype(np.float32), int(target), logits


def saliency_map(model, image, target=None) -> np.ndarray:
    """How much each pixel moves the class score: |d logit[target] / d pixel|, max over channels, / its maximum.

    The gradient comes from `fastcnn.training.input_gradient` (eval mode; no param.grad changes).

    Args:
        model: a model producing logits (N, classes).
        image: (C, H, W), or (H, W) for one channel.
        target: the class whose logit is differentiated. Default: the predicted class.

    Returns:
        float32 (H, W) in [0, 1] (all zeros when the gradient is 0 everywhere).
    """
    return _saliency(model, image, target, "saliency_map")[0]
