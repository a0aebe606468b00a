"""The demo's pictures: what `fastcnn.viz.arrays` computes, encoded as PNG data URIs for <img> elements.

The arrays come from the same functions as the matplotlib plots (`filters_grid`, `feature_maps`, `pooled_maps`,
`maps_grid`, `to_uint8`), so the page and a notebook show the same numbers. PNGs are written with zlib and struct
(8-bit grayscale or RGB, no interlacing), which keeps the demo free of Pillow.
"""
from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

from ..training import predict
from ..viz import arrays

__all__ = ["png_bytes", "png_data_uri", "image_view", "model_views"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {2: 0, 3: 2}  # array ndim -> PNG colour type: (H, W) grayscale, (H, W, 3) RGB


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(image) -> bytes:
    """A PNG file of a uint8 image (H, W) (grayscale) or (H, W, 3) (RGB).

    Example:
        >>> png_bytes(np.zeros((2, 3), np.uint8))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim not in _COLOR_TYPES or pixels.size == 0 \
            or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"png_bytes: expected a non-empty uint8 image (H, W) or (H, W, 3); got dtype "
                         f"{pixels.dtype} and shape {pixels.shape}")
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    # Every scanline starts with its filter type; 0 (none) compresses these small images well enough.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[pixels.ndim], 0, 0, 0)
    return (_PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b""))


def png_data_uri(image) -> str:
    """`data:image/png;base64,...` for a uint8 image (H, W) or (H, W, 3)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def image_view(image, **extra) -> dict:
    """{"src": PNG data URI, "width": W, "height": H, **extra} for a uint8 image."""
    pixels = np.asarray(image)
    return {"src": png_data_uri(pixels), "width": int(pixels.shape[1]), "height": int(pixels.shape[0]), **extra}


def input_image(image) -> np.ndarray:
    """A dataset image (C, H, W) in [0, 1] as uint8 (H, W) for one channel or (H, W, 3) for three."""
    pixels = arrays.to_uint8(np.asarray(image), 0.0, 1.0)
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def model_views(model, image, label: int, class_names: list[str], sample: int) -> dict:
    """Everything the page shows about one model and one sample image.

    `model` is the demo's snapshot (a tutorial_cnn that nothing else runs at the same time): its first Conv2d's
    kernels, that layer's output for the image (one map per filter), the maps leaving the first pooling layer, and
    the model's prediction for the image.

    Returns:
        {"sample", "label", "label_name", "image", "filters", "feature_maps", "pooled_maps", "prediction"}, where
        each picture is `image_view`'s dict (plus vmin/vmax for the filters and the maps' shape).
    """
    filters = arrays.filters_grid(model)
    conv = arrays.feature_maps(model, image)  # the first Conv2d's output, before the ReLU
    before, after = arrays.pooled_maps(model, image)
    probabilities = predict(model, np.asarray(image)[None])[0]
    predicted = int(np.argmax(probabilities))
    return {
        "sample": int(sample),
        "label": int(label),
        "label_name": class_names[int(label)],
        "image": image_view(input_image(image)),
        "filters": image_view(filters.image, count=int(conv.shape[0]), vmin=filters.vmin, vmax=filters.vmax),
        "feature_maps": image_view(arrays.maps_grid(conv), shape=list(conv.shape)),
        "pooled_maps": image_view(arrays.maps_grid(after), shape=list(after.shape),
                                  input_shape=list(before.shape)),
        "prediction": {"label": predicted, "name": class_names[predicted],
                       "probabilities": [round(float(p), 4) for p in probabilities]},
    }
