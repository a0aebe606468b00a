"""matplotlib figures over `fastcnn.viz.arrays`: filters, feature maps, pooling, learning curves, confusion matrix,
saliency and predictions.

Each function returns a `matplotlib.figure.Figure` drawn with the Agg canvas (no pyplot, no global state, nothing
shown), so it is safe in scripts, servers and threads; `path=` also saves it as a PNG, written to a temporary file
in the same folder and renamed into place, so a reader never sees half a file. matplotlib is imported on the first
call: `import fastcnn.viz` needs only NumPy.
"""
from __future__ import annotations

import math

import numpy as np

from . import arrays
from .arrays import (
    _as_batch,
    _check_model,
    _feature_maps,
    _filters_grid,
    _labels,
    _logits,
    _module_at,
    _name,
    _pooled_maps,
    _positive_int,
    _saliency,
    _weight_of,
)
from .._atomic import atomic_file

__all__ = [
    "plot_filters",
    "plot_feature_maps",
    "plot_pooled_maps",
    "plot_history",
    "plot_confusion_matrix",
    "plot_saliency",
    "plot_predictions",
]

_TILE_INCHES = 1.4
_WRONG = "tab:red"


def _figure(width: float, height: float, layout=None):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("fastcnn.viz plots need matplotlib, which is not installed; install it with "
                          "`pip install matplotlib` (the array functions in fastcnn.viz need only NumPy)") from error
    figure = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _finish(figure, path):
    """Save `figure` as a PNG at `path` (when given) atomically, and return it."""
    if path is None:
        return figure
    with atomic_file(path, suffix=".png") as file:
        figure.savefig(file, format="png")
    return figure


def _tile_axes(figure, count: int, columns: int):
    rows = -(-count // columns)
    return [figure.add_subplot(rows, columns, index + 1) for index in range(count)]


def _display(image: np.ndarray) -> np.ndarray:
    """One (C, H, W) image for imshow: (H, W) or (H, W, 3) uint8; [0, 1] data as is, other ranges stretched."""
    low, high = float(image.min()), float(image.max())
    vmin, vmax = (0.0, 1.0) if low >= 0.0 and high <= 1.0 else (low, high)
    if image.shape[0] == 3:
        return arrays.to_uint8(image.transpose(1, 2, 0), vmin, vmax)
    return arrays.to_uint8(image.mean(axis=0), vmin, vmax)


def _class_names(names, classes: int, fn: str) -> list[str]:
    if names is None:
        return [str(c) for c in range(classes)]
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError(f"{fn}: class_names must be a list of names (fastcnn.datasets.class_names('mnist') gives "
                        f"one); got {names!r}")
    if len(names) != classes:
        raise ValueError(f"{fn}: class_names has {len(names)} names but the model predicts {classes} classes")
    return [str(n) for n in names]


def _no_ticks(ax):
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------------------------------

def plot_filters(model_or_layer, layer=None, *, padding: int = 1, columns=None, cmap: str = "gray", path=None):
    """The kernels of a convolution as one grid (see `filters_grid`) with a shared, labelled colour bar.

    Args:
        model_or_layer: a model, a Conv2d, a Parameter or a weight array.
        layer: which Conv2d of a model. Default: the first.
        padding, columns: as `filters_grid`.
        cmap: colour map for single-channel kernels. Default: "gray" (black = most negative, white = most positive).
        path: save the figure as a PNG here.

    Returns:
        the Figure: one image axes and one colour-bar axes.
    """
    fn = "plot_filters"
    weight = _weight_of(model_or_layer, layer, fn)
    grid = _filters_grid(weight, padding, 1, columns, fn)
    count, inputs, kh, kw = weight.shape
    height, width = grid.image.shape[:2]
    side = min(8.0, max(3.0, 0.12 * max(height, width)))
    figure = _figure(side * width / max(height, width) + 1.6, side * height / max(height, width) + 0.8,
                     layout="compressed")
    ax = figure.add_subplot()
    ax.imshow(grid.image, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    _no_ticks(ax)
    if inputs in (1, 3):
        ax.set_title(f"{count} filters, {kh}x{kw}" + (" (RGB)" if inputs == 3 else ""))
    else:
        ax.set_title(f"{count} filters x {inputs} input channels, {kh}x{kw}")
        ax.set_xlabel("input channel")
        ax.set_ylabel("filter (output channel)")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = ScalarMappable(norm=Normalize(grid.vmin, grid.vmax), cmap=cmap if inputs != 3 else "gray")
    figure.colorbar(scale, ax=ax, label="weight value" + (" (each RGB channel)" if inputs == 3 else ""))
    return _finish(figure, path)


def plot_feature_maps(model, image, layer=None, *, columns=None, cmap: str = "viridis", path=None):
    """One tile per channel of a layer's output for one image (see `feature_maps`), each on its own colour scale.

    Args:
        model, image, layer: as `feature_maps` (default layer: the first Conv2d).
        columns: tiles per row. Default: ceil(sqrt(C)).
        path: save the figure as a PNG here.

    Returns:
        the Figure: one axes per map.
    """
    fn = "plot_feature_maps"
    maps, path_to_layer = _feature_maps(model, image, layer, fn)
    count = maps.shape[0]
    columns = math.ceil(math.sqrt(count)) if columns is None else _positive_int(columns, "columns", fn)
    rows = -(-count // columns)
    figure = _figure(_TILE_INCHES * columns, _TILE_INCHES * rows + 0.6, layout="constrained")
    for index, ax in enumerate(_tile_axes(figure, count, columns)):
        ax.imshow(maps[index], cmap=cmap, interpolation="nearest")
        ax.set_title(f"map {index}", fontsize=8)
        _no_ticks(ax)
    kind = type(_module_at(model, path_to_layer)).__name__
    figure.suptitle(f"Layer {_name(path_to_layer)} ({kind}): {count} maps of {maps.shape[1]}x{maps.shape[2]}")
    return _finish(figure, path)


def plot_pooled_maps(model, image, layer=None, *, max_maps: int = 8, cmap: str = "viridis", path=None):
    """Each map before and after a pooling layer, side by side on the same colour scale (see `pooled_maps`).

    Args:
        model, image, layer: as `pooled_maps` (default: the first pooling layer).
        max_maps: show the first this many channels. Default: 8.
        path: save the figure as a PNG here.

    Returns:
        the Figure: two axes (before, after) per map shown.
    """
    fn = "plot_pooled_maps"
    max_maps = _positive_int(max_maps, "max_maps", fn)
    before, after, pool_path = _pooled_maps(model, image, layer, fn)
    pool = _module_at(model, pool_path)
    count = min(before.shape[0], max_maps)
    figure = _figure(2 * _TILE_INCHES + 0.6, _TILE_INCHES * count + 0.6, layout="constrained")
    axes = _tile_axes(figure, 2 * count, 2)
    for index in range(count):
        low = min(before[index].min(), after[index].min())
        high = max(before[index].max(), after[index].max())
        for ax, maps, label in ((axes[2 * index], before, "before"), (axes[2 * index + 1], after, "after")):
            ax.imshow(maps[index], cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            _no_ticks(ax)
            if index == 0:
                ax.set_title(f"{label} ({maps.shape[1]}x{maps.shape[2]})", fontsize=9)
        axes[2 * index].set_ylabel(f"map {index}", fontsize=8)
    window = "x".join(str(k) for k in pool.kernel_size)
    figure.suptitle(f"{type(pool).__name__} {window}")
    return _finish(figure, path)


def plot_history(history, *, path=None):
    """Learning curves in three panels: loss and accuracy (training and validation) and the learning rate.

    Args:
        history: a `fastcnn.training.History` or its `.history` dict.
        path: save the figure as a PNG here.

    Returns:
        the Figure: three axes (a panel without data says so).
    """
    fn = "plot_history"
    curves = arrays.history_arrays(history)
    if not curves["epoch"]:
        raise ValueError(f"{fn}: the history holds no epochs")
    figure = _figure(12.0, 3.6, layout="constrained")
    from matplotlib.ticker import MaxNLocator

    panels = (("loss", ("loss", "val_loss")), ("accuracy", ("accuracy", "val_accuracy")), ("learning rate", ("lr",)))
    for ax, (title, keys) in zip(figure.subplots(1, 3), panels):
        drawn = False
        for key in keys:
            values = curves.get(key)
            if values:
                label = "validation" if key.startswith("val_") else "training"
                ax.plot(curves["epoch"][:len(values)], values, marker="o", markersize=3, label=label)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif title == "learning rate":
            if all(v > 0 for v in curves["lr"]):
                ax.set_yscale("log")
        else:
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _finish(figure, path)


def plot_confusion_matrix(model, x, y, class_names=None, *, batch_size: int = 256, cmap: str = "Blues", path=None):
    """The confusion matrix of the model's predictions on (x, y), every cell annotated with its count.

    Args:
        model: a model producing logits (N, classes).
        x: images (N, C, H, W); y: their labels (N,).
        class_names: a list of one name per class. Default: the class indices.
        batch_size: images per forward pass. Default: 256.
        path: save the figure as a PNG here.

    Returns:
        the Figure: one axes (rows: true class, columns: predicted class).
    """
    fn = "plot_confusion_matrix"
    _check_model(model, fn)
    x = _as_batch(x, fn)
    logits = _logits(model, x, fn, _positive_int(batch_size, "batch_size", fn))
    classes = logits.shape[1]
    truth = _labels(y, "y", fn, count=x.shape[0], classes=classes)
    names = _class_names(class_names, classes, fn)
    counts = arrays.confusion_matrix(truth, logits.argmax(axis=1), classes)
    side = max(4.0, 0.55 * classes + 1.5)
    figure = _figure(side, side, layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(counts, cmap=cmap, interpolation="nearest")
    threshold = counts.max() / 2
    for (row, column), count in np.ndenumerate(counts):
        ax.text(column, row, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > threshold else "black")
    long_names = max(map(len, names)) > 2
    ax.set_xticks(range(classes), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(classes), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {np.trace(counts) / counts.sum():.1%} on {counts.sum()} images")
    return _finish(figure, path)


def plot_saliency(model, image, target=None, class_names=None, *, cmap: str = "hot", path=None):
    """The image and its saliency (see `saliency_map`) laid over it.

    Args:
        model: a model producing logits (N, classes).
        image: (C, H, W), or (H, W) for one channel.
        target: the class explained. Default: the predicted class.
        class_names: a list of one name per class. Default: the class indices.
        path: save the figure as a PNG here.

    Returns:
        the Figure: two image axes (the image; the image with the saliency on top) and a colour-bar axes.
    """
    fn = "plot_saliency"
    saliency, target, logits = _saliency(model, image, target, fn)
    names = _class_names(class_names, logits.shape[0], fn)
    shown = _display(arrays._as_image(image, fn))
    gray = "gray" if shown.ndim == 2 else None
    predicted = int(np.argmax(logits))
    figure = _figure(6.4, 3.6, layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(shown, cmap=gray, interpolation="nearest")
    left.set_title(f"input (predicted: {names[predicted]})")
    right.imshow(shown, cmap=gray, interpolation="nearest")
    overlay = right.imshow(saliency, cmap=cmap, alpha=0.6, vmin=0.0, vmax=1.0, interpolation="nearest")
    right.set_title(f"saliency for {names[target]}")
    for ax in (left, right):
        _no_ticks(ax)
    figure.colorbar(overlay, ax=right, label="|d score / d pixel| (scaled)")
    return _finish(figure, path)


def plot_predictions(model, x, y, class_names=None, count: int = 16, *, columns=None, path=None):
    """The first `count` images with their predicted and true labels; mistakes have a red title and frame.

    Args:
        model: a model producing logits (N, classes).
        x: images (N, C, H, W); y: their labels (N,).
        class_names: a list of one name per class. Default: the class indices.
        count: images shown (at most N). Default: 16.
        columns: tiles per row. Default: ceil(sqrt(count)).
        path: save the figure as a PNG here.

    Returns:
        the Figure: one axes per image shown.
    """
    fn = "plot_predictions"
    _check_model(model, fn)
    x = _as_batch(x, fn)
    shown = min(_positive_int(count, "count", fn), x.shape[0])
    logits = _logits(model, x[:shown], fn)
    classes = logits.shape[1]
    truth = _labels(y, "y", fn, count=x.shape[0], classes=classes)[:shown]
    names = _class_names(class_names, classes, fn)
    predicted = logits.argmax(axis=1)
    columns = math.ceil(math.sqrt(shown)) if columns is None else _positive_int(columns, "columns", fn)
    rows = -(-shown // columns)
    figure = _figure(_TILE_INCHES * columns, (_TILE_INCHES + 0.25) * rows + 0.5, layout="constrained")
    for index, ax in enumerate(_tile_axes(figure, shown, columns)):
        image = _display(x[index])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        _no_ticks(ax)
        right = predicted[index] == truth[index]
        ax.set_title(f"pred {names[predicted[index]]}\ntrue {names[truth[index]]}", fontsize=8,
                     color="black" if right else _WRONG)
        if not right:
            for spine in ax.spines.values():
                spine.set_edgecolor(_WRONG)
                spine.set_linewidth(2.5)
    figure.suptitle(f"{int(np.sum(predicted == truth))} of {shown} correct")
    return _finish(figure, path)
