"""Losses: `loss = criterion(output, target)` returns a float; `criterion.backward()` returns dLoss/doutput."""
from __future__ import annotations

import numpy as np

from .. import _args

__all__ = ["CrossEntropyLoss", "MSELoss"]


def check_labels(fn: str, target, batch: int, classes: int) -> np.ndarray:
    """Integer class labels, one per row, each in [0, classes)."""
    labels = np.asarray(target)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and labels.size and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise TypeError(f"{fn}: target must hold integer class labels; got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"{fn}: expected target of shape ({batch},) to match the logits; got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise ValueError(f"{fn}: labels must be in [0, {classes}) for {classes} classes; got {bad}")
    return labels.astype(np.int64, copy=False)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # subtracting the max keeps exp() from overflowing
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss:
    """Mean cross-entropy of logits against integer labels, with a fused, numerically stable log-softmax.

    Args:
        label_smoothing: in [0, 1); the target puts 1 - label_smoothing on the label and spreads label_smoothing
            evenly over all classes, as PyTorch does. Default: 0.

    Shape:
        logits (N, C), target (N,) int -> a Python float.
    """

    def __init__(self, label_smoothing: float = 0.0):
        smoothing = float(label_smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1); got {label_smoothing!r}")
        self.label_smoothing = smoothing
        self._cache = None

    def __call__(self, logits, target) -> float:
        fn = "CrossEntropyLoss"
        logits = _args.as_float32(logits, "logits", fn)
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise ValueError(f"{fn}: expected logits of shape (N, C) with N >= 1; got {logits.shape}")
        labels = check_labels(fn, target, logits.shape[0], logits.shape[1])
        log_p = log_softmax(logits.astype(np.float64))
        n, classes = logits.shape
        rows = np.arange(n)
        nll = -log_p[rows, labels]
        loss = (1.0 - self.label_smoothing) * nll - self.label_smoothing * log_p.mean(axis=1)
        self._cache = (log_p, labels)
        return float(loss.mean())

    def backward(self) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward: call the loss on a batch first")
        log_p, labels = self._cache
        n, classes = log_p.shape
        target = np.full((n, classes), self.label_smoothing / classes)
        target[np.arange(n), labels] += 1.0 - self.label_smoothing
        return ((np.exp(log_p) - target) / n).astype(np.float32)


class MSELoss:
    """Mean squared error between output and target (same shape)."""

    def __init__(self):
        self._cache = None

    def __call__(self, output, target) -> float:
        output = _args.as_float32(output, "output", "MSELoss")
        target = _args.as_float32(target, "target", "MSELoss")
        if output.shape != target.shape:
            raise ValueError(f"MSELoss: output {output.shape} and target {target.shape} must have the same shape")
        diff = output.astype(np.float64) - target
        self._cache = diff
        return float(np.mean(diff * diff))

    def backward(self) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("MSELoss.backward: call the loss on a batch first")
        return (2.0 * self._cache / self._cache.size).astype(np.float32)
