"""Checks at the boundary of fit, evaluate, predict and the gradient tools, and the batches they train on.

The argument checks turn what a user passes (arrays, labels, a loss, augmentations) into validated float32 inputs
and int64 labels, with errors that name the function, the argument and the value; `_modes` switches a model to train
or eval mode and restores every module's own mode. `_Arrays` and `_Batches` feed `fit` and `evaluate` batches from
arrays or from iterables of (x_batch, y_batch) pairs. `fastcnn.training` and `_gradients` import them from here.
"""
from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterable, Iterator

import numpy as np

from . import _grad_mode, nn


# ---------------------------------------------------------------------------------------------------------------
# Argument checks

def _check_int(value, name: str, fn: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be an int >= {minimum}; got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an int >= {minimum}; got {type(value).__name__} {value!r}") from None
    if number < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}; got {value!r}")
    return number


def _check_model(model, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a fastcnn.nn.Module; got {type(model).__name__}")


def _check_seed(seed, fn: str):
    if seed is None:
        return None
    return _check_int(seed, "seed", fn, 0)


def _first_nonfinite(array: np.ndarray):
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    return index if len(index) > 1 else index[0]


def _as_inputs(x, name: str, fn: str) -> np.ndarray:
    """A non-empty, finite float32 batch (N, ...)."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{fn}: {name} must be an array of numbers (N, C, H, W); got {type(x).__name__}")
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{fn}: {name} must be an array of numbers; could not convert it: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must hold numbers; got dtype {array.dtype}")
    if array.ndim < 2:
        raise ValueError(f"{fn}: {name} must be a batch of shape (N, ...) such as (N, C, H, W); got shape "
                         f"{array.shape}")
    if array.shape[0] == 0 or array.size == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {array.shape})")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = _first_nonfinite(array)
    if bad is not None:
        raise ValueError(f"{fn}: {name} holds NaN or infinite values (first at index {bad}: {array[bad].item()}); "
                         f"clean or impute the data first")
    return array


def _as_labels(y, name: str, fn: str, count: int) -> np.ndarray:
    """Integer class labels of shape (count,), as int64 (range is checked once the model's classes are known)."""
    try:
        labels = np.asarray(y)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{fn}: {name} must be an array of integer class labels; could not convert it: {error}") \
            from None
    if labels.ndim != 1:
        raise ValueError(f"{fn}: {name} must be a 1-D array of class labels, one per sample; got shape "
                         f"{labels.shape}")
    if labels.shape[0] != count:
        raise ValueError(f"{fn}: x and {name} must have the same length; got {count} and {labels.shape[0]}")
    if labels.dtype.kind == "f":
        bad = _first_nonfinite(labels)
        if bad is not None:
            raise ValueError(f"{fn}: {name} holds NaN or infinite values (first at index {bad})")
        fractional = np.nonzero(np.mod(labels, 1) != 0)[0]
        if fractional.size:
            first = int(fractional[0])
            raise ValueError(f"{fn}: {name} must hold integer class labels; got {labels[first].item()!r} at index "
                             f"{first}")
    elif labels.dtype.kind not in "iub":
        raise TypeError(f"{fn}: {name} must hold integer class labels; got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _check_label_range(labels: np.ndarray, classes: int, name: str, fn: str) -> None:
    bad = np.nonzero((labels < 0) | (labels >= classes))[0]
    if bad.size:
        raise ValueError(f"{fn}: {name} must hold class labels in [0, {classes}) for the model's {classes} outputs; "
                         f"got {int(labels[bad[0]])} at index {int(bad[0])}")


def _as_targets(y, name: str, fn: str, count: int, labels: bool) -> np.ndarray:
    if labels:
        return _as_labels(y, name, fn, count)
    targets = _as_inputs(np.reshape(y, (-1, 1)) if np.ndim(y) == 1 else y, name, fn).reshape(np.shape(y))
    if targets.shape[0] != count:
        raise ValueError(f"{fn}: x and {name} must have the same length; got {count} and {targets.shape[0]}")
    return targets


def _wants_labels(criterion, y) -> bool:
    """Targets are class labels for CrossEntropyLoss, and for any loss given a 1-D integer y."""
    if isinstance(criterion, nn.CrossEntropyLoss):
        return True
    array = np.asarray(y) if y is not None else None
    return array is not None and array.ndim == 1 and array.dtype.kind in "iu"


def _check_criterion(loss, fn: str):
    criterion = nn.CrossEntropyLoss() if loss is None else loss
    if isinstance(criterion, type) or not callable(criterion) or not callable(getattr(criterion, "backward", None)):
        raise TypeError(f"{fn}: loss must be a criterion such as fastcnn.nn.CrossEntropyLoss() (callable, with "
                        f"backward()); got {type(loss).__name__}")
    return criterion


def _compose_augment(augment, fn: str):
    if augment is None:
        return None
    steps = list(augment) if isinstance(augment, (list, tuple)) else [augment]
    for step in steps:
        if not callable(step):
            raise TypeError(f"{fn}: augment must be a callable t(x, rng) -> x or a list of them; got "
                            f"{type(step).__name__}")

    def apply(x, rng):
        for step in steps:
            out = np.asarray(step(x, rng))
            if out.ndim < 1 or out.shape[0] != x.shape[0]:
                raise ValueError(f"{fn}: augment {step!r} must return a batch of {x.shape[0]} images; got shape "
                                 f"{out.shape}")
            x = np.ascontiguousarray(out, dtype=np.float32)
        return x
    return apply


def _class_count(model, sample: np.ndarray, labels: bool, fn: str):
    """Run one sample through the model in eval mode (nothing recorded or updated) to learn its output shape."""
    with _modes(model, training=False), _grad_mode.no_grad():
        out = np.asarray(model(sample[:1]))
    if labels and out.ndim != 2:
        raise ValueError(f"{fn}: with class labels the model must output logits of shape (N, classes); its output "
                         f"for input {sample[:1].shape} has shape {out.shape}")
    return out.shape[1] if out.ndim == 2 else None


@contextlib.contextmanager
def _modes(model, training: bool):
    """Put the model in train or eval mode and restore every module's own mode afterwards."""
    previous = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, mode in previous:
            object.__setattr__(module, "training", mode)  # as Module.train sets it, without __setattr__'s bookkeeping


# ---------------------------------------------------------------------------------------------------------------
# Data: arrays or iterables of (x_batch, y_batch)

class _Arrays:
    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.samples = x.shape[0]
        self.steps = -(-self.samples // batch_size)

    def batches(self, order=None):
        """Batches in stored order, or of the samples `order` lists (a permutation, or one process's shard)."""
        for start in range(0, self.samples if order is None else len(order), self.batch_size):
            if order is None:
                yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                index = order[start:start + self.batch_size]
                yield self.x[index], self.y[index]


class _Batches:
    """Batches from a re-iterable (a list, a dataset object), a callable returning a fresh iterable per epoch, or a
    one-shot iterator (a generator), which feeds one epoch unless steps_per_epoch splits it into epochs."""

    def __init__(self, source, name: str, fn: str, steps_per_epoch, criterion):
        self.name, self.fn, self.steps, self.criterion = name, fn, steps_per_epoch, criterion
        self.samples = None
        if isinstance(source, Iterator):
            self._shared = source
            self._make = None
        elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, np.ndarray)):
            self._shared, self._make = None, lambda: iter(source)
        elif callable(source):
            self._shared, self._make = None, lambda: iter(self._call(source))
        else:
            raise TypeError(f"{fn}: {name} must be an array (with y), an iterable of (x_batch, y_batch) pairs, or a "
                            f"callable returning one; got {type(source).__name__}")
        self.one_shot = self._make is None

    def _call(self, source):
        produced = source()
        if not isinstance(produced, Iterable):
            raise TypeError(f"{self.fn}: the callable {self.name} must return an iterable of (x_batch, y_batch) "
                            f"pairs; it returned {type(produced).__name__}")
        return produced

    def batches(self, epoch: int):
        iterator = self._shared if self._shared is not None else self._make()
        count = 0
        while self.steps is None or count < self.steps:
            try:
                item = next(iterator)
            except StopIteration:
                break
            where = f"{self.name} batch {count} of epoch {epoch + 1}"
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(f"{self.fn}: {self.name} must yield (x_batch, y_batch) pairs; {where} is a "
                                f"{type(item).__name__}")
            xb = _as_inputs(item[0], f"x in {where}", self.fn)
            yb = _as_targets(item[1], f"y in {where}", self.fn, xb.shape[0], _wants_labels(self.criterion, item[1]))
            count += 1
            yield xb, yb
        if count == 0:
            raise ValueError(f"{self.fn}: {self.name} yielded no batches in epoch {epoch + 1}"
                             + (" (a generator feeds only one epoch: pass a callable returning a fresh one, or "
                                "steps_per_epoch)" if self.one_shot else ""))
        if self.steps is not None and count < self.steps:
            raise ValueError(f"{self.fn}: {self.name} ran out after {count} batches in epoch {epoch + 1}; "
                             f"steps_per_epoch={self.steps} needs that many per epoch")


def _validation_source(validation_data, batch_size, criterion, fn):
    if isinstance(validation_data, tuple):
        if len(validation_data) != 2:
            raise ValueError(f"{fn}: validation_data must be a tuple (x_val, y_val); got a tuple of "
                             f"{len(validation_data)}")
        x_val = _as_inputs(validation_data[0], "validation_data x", fn)
        labels = _wants_labels(criterion, validation_data[1])
        y_val = _as_targets(validation_data[1], "validation_data y", fn, x_val.shape[0], labels)
        return _Arrays(x_val, y_val, batch_size), labels
    source = _Batches(validation_data, "validation_data", fn, None, criterion)
    if source.one_shot:
        raise TypeError(f"{fn}: validation_data must be a tuple (x_val, y_val), a re-iterable of batches or a "
                        f"callable returning one; a one-shot generator would be empty after the first epoch")
    return source, None
