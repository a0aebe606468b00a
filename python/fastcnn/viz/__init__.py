"""fastcnn.viz: what a CNN learned and how it did, as arrays (NumPy only) and as matplotlib figures.

The array functions (`fastcnn.viz.arrays`) compute what is drawn: kernel grids, feature maps, maps before and
after pooling, confusion counts, learning curves and saliency maps. Front ends reuse them (the browser demo
encodes their uint8 images itself). The plots (`fastcnn.viz.plots`) draw them with matplotlib, imported only when
a plot function is called, and return `matplotlib.figure.Figure` objects; `path=` also saves a PNG.

Example:
    >>> from fastcnn import viz
    >>> image, vmin, vmax = viz.filters_grid(model)          # the first Conv2d's kernels, uint8
    >>> viz.plot_history(history, path="curves.png")
"""
from .arrays import (
    GAP_VALUE,
    Grid,
    confusion_matrix,
    feature_maps,
    filters_grid,
    history_arrays,
    maps_grid,
    pooled_maps,
    saliency_map,
    to_uint8,
)
from .plots import (
    plot_confusion_matrix,
    plot_feature_maps,
    plot_filters,
    plot_history,
    plot_pooled_maps,
    plot_predictions,
    plot_saliency,
)

__all__ = [
    "Grid", "GAP_VALUE", "to_uint8", "filters_grid", "feature_maps", "maps_grid", "pooled_maps", "confusion_matrix",
    "history_arrays", "saliency_map",
    "plot_filters", "plot_feature_maps", "plot_pooled_maps", "plot_history", "plot_confusion_matrix",
    "plot_saliency", "plot_predictions",
]
