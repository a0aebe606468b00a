"""Random augmentation of a training batch, vectorised over the batch and reproducible from a seed.

A transform is a callable `t(x, rng)`: x is a batch of shape (N, C, H, W) (converted to float32), rng a
`numpy.random.Generator`, an int seed, or None for fresh entropy. It returns a new float32 array of the same shape;
each image gets its own random draw. `t.sample(x.shape, rng)` returns the random parameters that `t(x, rng)` would
use with an identically seeded generator, so a result can be reproduced or checked.

The deterministic operations underneath are public too: `crop`, `translate` and `rotate`.

Example:
    >>> train_transform = Compose([RandomCrop(28, padding=2), RandomHorizontalFlip(), RandomRotation(10)])
    >>> rng = np.random.default_rng(0)
    >>> for xb, yb in batches:
    ...     xb = train_transform(xb, rng)
"""
from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._args import as_float32, pair

__all__ = [
    "RandomHorizontalFlip",
    "RandomCrop",
    "RandomRotation",
    "RandomTranslate",
    "Compose",
    "crop",
    "translate",
    "rotate",
]


def _batch(x, fn: str) -> np.ndarray:
    x = as_float32(x, "input", fn)
    if x.ndim != 4:
        raise ValueError(f"{fn}: expected a batch of shape (N, C, H, W); got shape {x.shape}")
    return x


def _generator(rng, fn: str) -> np.random.Generator:
    if rng is None or isinstance(rng, (np.random.Generator, numbers.Integral)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise TypeError(f"{fn}: rng must be a numpy.random.Generator, an int seed or None; got {rng!r}")


def _per_image(values, n: int, name: str, fn: str) -> np.ndarray:
    """A scalar or one value per image, as an (n,) array."""
    array = np.asarray(values)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != n):
        raise ValueError(f"{fn}: {name} must be a scalar or hold one value per image ({n}); got shape {array.shape}")
    return np.broadcast_to(array, (n,))


def _windows(padded: np.ndarray, top: np.ndarray, left: np.ndarray, height: int, width: int) -> np.ndarray:
    """padded[i, :, top[i]:top[i]+height, left[i]:left[i]+width] for every i, in one gather."""
    view = sliding_window_view(padded, (height, width), axis=(2, 3))  # (N, C, rows, cols, height, width), no copy
    # The advanced indices on axes 0, 2 and 3 are split by a slice, so their common axis comes first: (N, C, h, w).
    return np.ascontiguousarray(view[np.arange(padded.shape[0]), :, top, left])


# ------------------------------------------------------------------------------------ deterministic operations


def crop(x, top, left, size, *, padding=0) -> np.ndarray:
    """Crop each image of a zero-padded batch at its own offset.

    Args:
        x: batch of shape (N, C, H, W).
        top, left: offsets into the padded image, scalars or one per image.
        size: crop size (h, w), or an int for a square.
        padding: zeros added on each side, an int or (vertical, horizontal). Default: 0.

    Shape:
        output: (N, C, h, w); output[i] = padded[i, :, top[i]:top[i]+h, left[i]:left[i]+w].

    Example:
        >>> crop(np.ones((2, 1, 4, 4)), top=[0, 2], left=[1, 0], size=3, padding=1).shape
        (2, 1, 3, 3)
    """
    fn = "crop"
    x = _batch(x, fn)
    height, width = pair(size, "size", fn, minimum=1)
    pad_h, pad_w = pair(padding, "padding", fn, minimum=0)
    n, _, h, w = x.shape
    top = _per_image(top, n, "top", fn).astype(np.int64)
    left = _per_image(left, n, "left", fn).astype(np.int64)
    rows, cols = h + 2 * pad_h - height, w + 2 * pad_w - width
    if rows < 0 or cols < 0:
        padded = (h + 2 * pad_h, w + 2 * pad_w)
        raise ValueError(f"{fn}: size {(height, width)} is larger than the padded input {padded}")
    if n and (top.min() < 0 or top.max() > rows or left.min() < 0 or left.max() > cols):
        raise ValueError(f"{fn}: offsets must keep the crop inside the padded input: top in 0..{rows}, left in "
                         f"0..{cols}; got top {top.tolist()}, left {left.tolist()}")
    padded = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w))) if pad_h or pad_w else x
    return _windows(padded, top, left, height, width)


def translate(x, shift_y, shift_x) -> np.ndarray:
    """Shift each image by whole pixels, filling with zeros what comes in from outside.

    Args:
        x: batch of shape (N, C, H, W).
        shift_y, shift_x: pixels down and right (negative: up and left), scalars or one int per image.

    Shape:
        output: (N, C, H, W); like `np.roll` along H and W, except that pixels leaving one side are dropped.

    Example:
        >>> translate(np.arange(4.0).reshape(1, 1, 1, 4), 0, 1)[0, 0, 0]
        array([0., 0., 1., 2.], dtype=float32)
    """
    fn = "translate"
    x = _batch(x, fn)
    n, _, h, w = x.shape
    shifts = []
    for name, values, limit in (("shift_y", shift_y, h), ("shift_x", shift_x, w)):
        array = _per_image(values, n, name, fn)
        if array.dtype.kind not in "iu":
            raise TypeError(f"{fn}: {name} must hold integers (whole pixels); got dtype {array.dtype}")
        shifts.append(np.clip(array.astype(np.int64), -limit, limit))  # beyond the size everything is zero alike
    dy, dx = shifts
    pad_h, pad_w = int(np.abs(dy).max(initial=0)), int(np.abs(dx).max(initial=0))
    padded = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    return _windows(padded, pad_h - dy, pad_w - dx, h, w)


def rotate(x, angle, *, interpolation: str = "bilinear") -> np.ndarray:
    """Rotate each image about its centre, counter-clockwise by `angle` degrees, filling with zeros.

    The centre is ((H - 1) / 2, (W - 1) / 2), so multiples of 90 degrees on a square image move pixels exactly
    (rotate(x, 90) equals np.rot90(x, 1, axes=(2, 3))).

    Args:
        x: batch of shape (N, C, H, W).
        angle: degrees, a scalar or one per image; positive turns counter-clockwise, as in PyTorch.
        interpolation: "bilinear" or "nearest". Default: "bilinear".

    Example:
        >>> rotate(np.eye(3).reshape(1, 1, 3, 3), 90)[0, 0]
        array([[0., 0., 1.],
               [0., 1., 0.],
               [1., 0., 0.]], dtype=float32)
    """
    fn = "rotate"
    x = _batch(x, fn)
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"{fn}: interpolation must be 'bilinear' or 'nearest'; got {interpolation!r}")
    n, c, h, w = x.shape
    theta = np.deg2rad(_per_image(angle, n, "angle", fn).astype(np.float64))[:, None, None]
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"{fn}: angle must be finite; got {np.asarray(angle).tolist()}")
    # Inverse mapping: each output pixel reads the input at its position turned back by angle. Rows grow
    # downwards, which flips the sign of sin compared with the usual y-up formula.
    y = np.arange(h, dtype=np.float64)[None, :, None] - (h - 1) / 2
    xx = np.arange(w, dtype=np.float64)[None, None, :] - (w - 1) / 2
    cos, sin = np.cos(theta), np.sin(theta)
    src_y = sin * xx + cos * y + (h - 1) / 2
    src_x = cos * xx - sin * y + (w - 1) / 2
    # cos(90 degrees) is 6e-17, not 0, which far from the centre of a large image moves a coordinate by an ulp:
    # snap coordinates that are integers up to rounding, so quarter turns stay exact.
    src_y, src_x = (np.where(np.abs(v - np.rint(v)) < 1e-9, np.rint(v), v) for v in (src_y, src_x))
    flat = x.reshape(n, c, h * w)
    if interpolation == "nearest":
        out = _sample(flat, np.rint(src_y).astype(np.int64), np.rint(src_x).astype(np.int64), h, w)
    else:
        y0, x0 = np.floor(src_y), np.floor(src_x)
        fy, fx = (src_y - y0).astype(np.float32), (src_x - x0).astype(np.float32)
        y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
        out = (_sample(flat, y0, x0, h, w, (1 - fy) * (1 - fx)) + _sample(flat, y0, x0 + 1, h, w, (1 - fy) * fx)
               + _sample(flat, y0 + 1, x0, h, w, fy * (1 - fx)) + _sample(flat, y0 + 1, x0 + 1, h, w, fy * fx))
    return out.reshape(n, c, h, w)


def _sample(flat: np.ndarray, iy: np.ndarray, ix: np.ndarray, h: int, w: int, weight=None) -> np.ndarray:
    """flat[i, :, iy * w + ix] times weight, zero where (iy, ix) lies outside the image; iy, ix are (N, H, W)."""
    n = flat.shape[0]
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    index = np.where(inside, iy * w + ix, 0).reshape(n, 1, -1)
    scale = inside.astype(np.float32) if weight is None else np.where(inside, weight, np.float32(0))
    # take_along_axis broadcasts the (N, 1, H*W) index over the channels.
    return np.take_along_axis(flat, index, axis=2) * scale.reshape(n, 1, -1)


# ------------------------------------------------------------------------------------------ random transforms


class _Transform:
    """`__call__` = `apply(x, sample(x.shape, rng))`, so a test or a user can replay the random draw."""

    def __call__(self, x, rng=None) -> np.ndarray:
        name = type(self).__name__
        x = _batch(x, name)
        return self.apply(x, self.sample(x.shape, _generator(rng, name)))

    def sample(self, shape, rng):
        raise NotImplementedError

    def apply(self, x: np.ndarray, params) -> np.ndarray:
        raise NotImplementedError


class RandomHorizontalFlip(_Transform):
    """Mirror each image left-right with probability p.

    Args:
        p: probability of flipping each image, in [0, 1]. Default: 0.5.

    Example:
        >>> x = np.arange(6.0).reshape(1, 1, 2, 3)
        >>> RandomHorizontalFlip(p=1.0)(x, rng=0)[0, 0]
        array([[2., 1., 0.],
               [5., 4., 3.]], dtype=float32)
    """

    def __init__(self, p: float = 0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be a probability in [0, 1]; got {p!r}")
        self.p = float(p)

    def sample(self, shape, rng):
        """A boolean per image: flip it or not."""
        return rng.random(shape[0]) < self.p

    def apply(self, x, flip):
        return np.where(np.asarray(flip)[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop(_Transform):
    """Pad each image with zeros, then cut a window of `size` at a random offset per image.

    Args:
        size: output size (h, w), or an int for a square.
        padding: zeros added on each side before cropping, an int or (vertical, horizontal). Default: 0.

    Shape:
        input (N, C, H, W) with h <= H + 2 * padding and w <= W + 2 * padding; output (N, C, h, w).

    Example:
        >>> RandomCrop(28, padding=4)(np.zeros((8, 1, 28, 28)), rng=0).shape
        (8, 1, 28, 28)
    """

    def __init__(self, size, padding=0):
        self.size = pair(size, "size", "RandomCrop", minimum=1)
        self.padding = pair(padding, "padding", "RandomCrop", minimum=0)

    def _room(self, shape):
        (height, width), (pad_h, pad_w) = self.size, self.padding
        padded = (shape[2] + 2 * pad_h, shape[3] + 2 * pad_w)
        if height > padded[0] or width > padded[1]:
            raise ValueError(f"RandomCrop: size {self.size} is larger than the padded input {padded} (input "
                             f"{tuple(shape[2:])} with padding={self.padding})")
        return padded[0] - height, padded[1] - width

    def sample(self, shape, rng):
        """(top, left) offsets into the padded images, one pair per image; tops are drawn first."""
        rows, cols = self._room(shape)
        top = rng.integers(0, rows + 1, size=shape[0])
        return top, rng.integers(0, cols + 1, size=shape[0])

    def apply(self, x, offsets):
        return crop(x, offsets[0], offsets[1], self.size, padding=self.padding)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomRotation(_Transform):
    """Rotate each image about its centre by its own angle drawn uniformly from [-degrees, degrees].

    Args:
        degrees: a number >= 0 for the range [-degrees, degrees], or a pair (min, max) with min <= max.
        interpolation: "bilinear" or "nearest"; pixels from outside the image are zero. Default: "bilinear".

    Example:
        >>> RandomRotation(15)(np.zeros((8, 1, 28, 28)), rng=0).shape
        (8, 1, 28, 28)
    """

    def __init__(self, degrees, interpolation: str = "bilinear"):
        rule = "a number >= 0 or a pair (min, max) of numbers with min <= max"
        values = degrees if isinstance(degrees, (tuple, list)) else (degrees,)
        if len(values) not in (1, 2) or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in values):
            raise ValueError(f"RandomRotation: degrees must be {rule}; got {degrees!r}")
        low, high = (-float(values[0]), float(values[0])) if len(values) == 1 else map(float, values)
        if low > high:
            raise ValueError(f"RandomRotation: degrees must be {rule}; got {degrees!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"RandomRotation: interpolation must be 'bilinear' or 'nearest'; got {interpolation!r}")
        self.degrees, self.interpolation = (low, high), interpolation

    def sample(self, shape, rng):
        """One angle in degrees per image."""
        return rng.uniform(self.degrees[0], self.degrees[1], size=shape[0])

    def apply(self, x, angles):
        return rotate(x, angles, interpolation=self.interpolation)

    def __repr__(self):
        return f"RandomRotation(degrees={self.degrees}, interpolation={self.interpolation!r})"


class RandomTranslate(_Transform):
    """Shift each image by a random whole number of pixels in each direction, filling with zeros.

    Args:
        max_shift: the largest shift, the same both ways or a pair (vertical, horizontal). An int counts pixels
            (>= 0); a float in [0, 1] is a fraction of the image's height or width, rounded down to pixels.
            Shifts are drawn uniformly from -max_shift..max_shift.

    Example:
        >>> RandomTranslate(0.1)(np.zeros((8, 1, 28, 28)), rng=0).shape   # up to 2 pixels each way
        (8, 1, 28, 28)
    """

    def __init__(self, max_shift):
        values = tuple(max_shift) if isinstance(max_shift, (tuple, list)) else (max_shift, max_shift)
        if len(values) != 2 or not all(self._valid(v) for v in values):
            raise ValueError("RandomTranslate: max_shift must be an int >= 0 (pixels), a float in [0, 1] (a "
                             f"fraction of the size) or a pair of those; got {max_shift!r}")
        self.max_shift = values

    @staticmethod
    def _valid(value) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, numbers.Integral):
            return value >= 0
        return isinstance(value, numbers.Real) and 0 <= value <= 1

    def _pixels(self, shape):
        return tuple(int(v) if isinstance(v, numbers.Integral) else int(v * size)
                     for v, size in zip(self.max_shift, shape[2:]))

    def sample(self, shape, rng):
        """(shift_y, shift_x) in pixels, one pair per image; vertical shifts are drawn first."""
        max_y, max_x = self._pixels(shape)
        shift_y = rng.integers(-max_y, max_y + 1, size=shape[0])
        return shift_y, rng.integers(-max_x, max_x + 1, size=shape[0])

    def apply(self, x, shifts):
        return translate(x, shifts[0], shifts[1])

    def __repr__(self):
        return f"RandomTranslate(max_shift={self.max_shift})"


class Compose:
    """Apply transforms in order, all drawing from the same generator.

    Args:
        transforms: a list of callables `t(x, rng)`.

    Example:
        >>> augment = Compose([RandomHorizontalFlip(), RandomCrop(28, padding=2)])
        >>> augment(np.zeros((8, 1, 28, 28)), rng=0).shape
        (8, 1, 28, 28)
    """

    def __init__(self, transforms):
        if isinstance(transforms, (str, bytes)) or not hasattr(transforms, "__iter__"):
            raise TypeError(f"Compose: transforms must be a list of callables t(x, rng); got {transforms!r}")
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] must be a callable t(x, rng); got {t!r}")

    def __call__(self, x, rng=None) -> np.ndarray:
        rng = _generator(rng, "Compose")
        x = _batch(x, "Compose")
        if not self.transforms:
            return x.copy()  # a new array, as every transform returns
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"
