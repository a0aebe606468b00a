"""Training, evaluation and gradient tools over the manual loop (forward, loss, backward, step).

`fit` is the loop every fastcnn user would otherwise write, with what makes it safe to leave running: input checks
up front, a stop with a clear error when the loss turns NaN, Ctrl-C that stops after the current batch and keeps
the model usable, callbacks (early stopping, checkpoints, learning-rate schedules), a tqdm progress bar, seeded
runs that are bitwise reproducible, and resuming from a checkpoint. `gradcheck` and `input_gradient` check and use
`Module.backward` directly.
"""
from __future__ import annotations

import contextlib
import math
import operator
import signal
import sys
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from . import _grad_mode, nn
from . import io as _io
from .callbacks import Callback, ModelCheckpoint

__all__ = ["History", "fit", "evaluate", "predict", "gradcheck", "input_gradient"]


class History(Callback):
    """What `fit` returns: the values logged at the end of every epoch, as `keras.callbacks.History`.

    Attributes:
        history: dict of per-epoch lists: "loss" and "accuracy" (means over the epoch's batches, weighted by batch
            size, i.e. running means as Keras reports them), "lr" (the learning rate the epoch trained with), and
            "val_loss", "val_accuracy" with validation data. "accuracy" appears when the targets are class labels.
        epoch: the epoch numbers (from 0; a resumed run starts at the checkpoint's epoch).
        interrupted: True when Ctrl-C (KeyboardInterrupt) stopped training; the interrupted epoch is not recorded.
        params: epochs, batch_size, steps (batches per epoch, None when unknown), samples, initial_epoch.
    """

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []
        self.interrupted = False

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)}, interrupted={self.interrupted})"


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
            module.training = mode


# ---------------------------------------------------------------------------------------------------------------
# Data: arrays or iterables of (x_batch, y_batch)

class _Arrays:
    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.samples = x.shape[0]
        self.steps = -(-self.samples // batch_size)

    def batches(self, order=None):
        for start in range(0, self.samples, self.batch_size):
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


# ---------------------------------------------------------------------------------------------------------------
# The loop's pieces

def _current_lr(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if not groups or "lr" not in groups[0]:
        return None
    return float(groups[0]["lr"])


def _score(criterion, logits, targets, labels: bool):
    """(mean loss, correct predictions or None) of one batch."""
    value = float(criterion(logits, targets))
    correct = int(np.count_nonzero(np.argmax(logits, axis=1) == targets)) if labels and logits.ndim == 2 else None
    return value, correct


def _run_evaluation(model, criterion, batches, classes=None, fn: str = "evaluate") -> dict:
    """Loss and accuracy over batches, in eval mode, recording nothing."""
    total, loss_sum, correct, labelled = 0, 0.0, 0, True
    with _modes(model, training=False), _grad_mode.no_grad():
        for xb, yb in batches:
            logits = model(xb)
            labels = yb.ndim == 1 and yb.dtype.kind in "iu"
            if labels and classes is None and np.ndim(logits) == 2:
                _check_label_range(yb, logits.shape[1], "validation y" if fn == "fit" else "y", fn)
            value, hits = _score(criterion, logits, yb, labels)
            loss_sum += value * xb.shape[0]
            total += xb.shape[0]
            if hits is None:
                labelled = False
            else:
                correct += hits
    result = {"loss": loss_sum / total}
    if labelled:
        result["accuracy"] = correct / total
    return result


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass

    def close(self):
        pass


def _progress_bar(enabled: bool, total, epoch: int, epochs: int):
    """A tqdm bar on stderr, or a silent stand-in. Without a terminal it redraws rarely (logs stay short)."""
    stream = sys.stderr
    if not enabled or stream is None or not hasattr(stream, "write"):
        return _NoBar()
    from tqdm import tqdm  # imported here: `import fastcnn` needs only NumPy

    try:
        terminal = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        terminal = False
    return tqdm(total=total, desc=f"Epoch {epoch + 1}/{epochs}", unit="img", file=stream, leave=True,
                dynamic_ncols=terminal, mininterval=0.1 if terminal else 5.0, ascii=None if terminal else True)


def _postfix(logs: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if k == "lr" else f"{k}={v:.4f}" for k, v in logs.items()
                     if k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr") and v is not None)


class _Interrupts:
    """Ctrl-C asks training to stop after the current batch; a second Ctrl-C interrupts at once.

    The SIGINT handler is installed only in the main thread (Python allows no other) and restored afterwards.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None:  # None: installed outside Python, and then it could not be restored
                self._previous = previous
                signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False


class _FitContext:
    """What ModelCheckpoint needs from fit besides the model and the optimizer: the random generators' states and
    the other callbacks' states."""

    def __init__(self, generators: dict, callbacks: list):
        self.generators, self.callbacks = generators, callbacks

    def rng_state(self) -> dict:
        dropout = self.generators["dropout"]
        return {
            "shuffle": self.generators["shuffle"].bit_generator.state,
            "augment": self.generators["augment"].bit_generator.state,
            "dropout": None if dropout is None else [g.bit_generator.state for g in dropout],
        }

    def restore_rng(self, state: dict, dropouts: list) -> None:
        self.generators["shuffle"].bit_generator.state = state["shuffle"]
        self.generators["augment"].bit_generator.state = state["augment"]
        if state.get("dropout") is not None:
            generators = []
            for module, saved in zip(dropouts, state["dropout"]):
                generator = np.random.default_rng()
                generator.bit_generator.state = saved
                module.reseed(generator)
                generators.append(generator)
            self.generators["dropout"] = generators

    def callbacks_state(self) -> list:
        states = []
        for callback in self.callbacks:
            state = callback.state_dict()
            if state is not None:
                states.append({"class": type(callback).__name__, "state": state})
        return states

    def restore_callbacks(self, saved) -> None:
        """Give each saved state to the callback of the same class in the same order among its class."""
        by_class: dict[str, list] = {}
        for entry in saved or []:
            by_class.setdefault(entry["class"], []).append(entry["state"])
        for callback in self.callbacks:
            pending = by_class.get(type(callback).__name__)
            if pending:
                callback.load_state_dict(pending.pop(0))


def _make_generators(model, seed):
    """Shuffling draws from default_rng(seed); augmentation and each Dropout from their own child streams of the
    same seed, so changing one (adding a Dropout) leaves the others' draws alone. Unseeded runs leave Dropout's own
    generators as they are."""
    root = np.random.SeedSequence(seed)
    dropouts = [module for module in model.modules() if isinstance(module, nn.Dropout)]
    children = root.spawn(1 + len(dropouts))
    generators = {"shuffle": np.random.default_rng(root), "augment": np.random.default_rng(children[0]),
                  "dropout": None}
    if seed is not None:
        generators["dropout"] = [np.random.default_rng(child) for child in children[1:]]
        for module, generator in zip(dropouts, generators["dropout"]):
            module.reseed(generator)
    return generators, dropouts


def _resume(path, model, optimizer, context: _FitContext, dropouts, fn: str) -> int:
    """Restore a checkpoint into the model, the optimizer, fit's generators and the callbacks; return its epoch.
    Everything is checked before anything changes, so a refused checkpoint leaves the model as it was."""
    checkpoint = _io.load_checkpoint(path)
    optimizer_state, rng_state = checkpoint["optimizer_state"], checkpoint["rng_state"]
    if optimizer_state is not None and checkpoint["optimizer_class"] != type(optimizer).__name__:
        raise ValueError(f"{fn}: resume_from={path!r} holds the state of a {checkpoint['optimizer_class']} "
                         f"optimizer; fit's optimizer is a {type(optimizer).__name__}")
    if rng_state is not None and rng_state.get("dropout") is not None and len(rng_state["dropout"]) != len(dropouts):
        raise ValueError(f"{fn}: resume_from={path!r} has random states for {len(rng_state['dropout'])} Dropout "
                         f"layers; the model has {len(dropouts)}")
    before = model.state_dict()
    try:
        model.load_state_dict(checkpoint["model_state"], strict=True)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
    except (TypeError, ValueError) as error:
        model.load_state_dict(before)
        raise type(error)(f"{fn}: resume_from={path!r} does not fit the model and optimizer: {error}") from None
    if rng_state is not None:
        context.restore_rng(rng_state, dropouts)
    context.restore_callbacks(checkpoint["callbacks_state"])
    return int(checkpoint["epoch"])


def _diverged(fn: str, what: str, epoch: int, batch: int, optimizer):
    raise FloatingPointError(
        f"{fn}: {what} at epoch {epoch + 1}, batch {batch + 1}; training stopped before this batch's update. "
        f"Lower the learning rate (now {_current_lr(optimizer)}) or check the data's scale")


# ---------------------------------------------------------------------------------------------------------------

def fit(model, x, y=None, *, epochs, batch_size=64, optimizer=None, loss=None, validation_data=None,
        validation_split=0.0, callbacks=(), augment=None, shuffle=True, seed=None, progress=True,
        steps_per_epoch=None, resume_from=None) -> History:
    """Train `model` on (x, y), as `keras.Model.fit`: the manual loop of forward, loss, backward and step per batch.

    Per batch: `logits = model(x); loss = criterion(logits, y); model.backward(criterion.backward(),
    input_grad=False); optimizer.step(); optimizer.zero_grad()`, in train mode; validation runs in eval mode inside
    `fastcnn.no_grad()`. Every module's mode is restored afterwards.

    Args:
        model: a `fastcnn.nn.Module` producing logits (N, classes).
        x: inputs (N, C, H, W) with `y` labels (N,); or, with y=None, batches of (x_batch, y_batch) pairs: a list or
            other re-iterable, a callable returning a fresh iterable per epoch (`lambda: my_batches()`), or a
            one-shot generator (one epoch, or `steps_per_epoch` batches per epoch from an endless one).
        y: integer class labels (N,) in [0, classes), or targets for another loss.
        epochs: the epoch to train up to (an int >= 1; a resumed run continues from its checkpoint's epoch).
        batch_size: samples per batch, for array input. Default: 64.
        optimizer: Default: `fastcnn.optim.Adam(model.parameters(), lr=1e-3)`.
        loss: a criterion with `backward()`. Default: `fastcnn.nn.CrossEntropyLoss()`.
        validation_data: a tuple (x_val, y_val), or a re-iterable / callable of (x_batch, y_batch) pairs,
            evaluated at the end of every epoch.
        validation_split: fraction in [0, 1) of the array data held out for validation: the LAST samples, before
            any shuffling (as Keras). Default: 0.
        callbacks: `fastcnn.callbacks.Callback` objects. Default: none.
        augment: a callable `t(x_batch, rng) -> x_batch` (or a list of them, applied in order) for training batches
            only. Default: None.
        shuffle: reshuffle array data every epoch. Default: True.
        seed: an int that makes the run reproducible bitwise: it seeds shuffling (`np.random.default_rng(seed)`),
            the augmentation generator and every Dropout layer (reseeded). Default: None (fresh randomness;
            Dropout layers keep their own generators).
        progress: show a tqdm bar per epoch (epoch, loss, accuracy, images/s) on stderr. Default: True.
        steps_per_epoch: batches per epoch for iterable input (required to split a one-shot generator into
            epochs). Default: None (until the iterable ends).
        resume_from: a checkpoint written by `fastcnn.callbacks.ModelCheckpoint`: the model's weights, the
            optimizer's state, the random generators and the callbacks' states are restored and training continues
            at the checkpoint's epoch, giving the same weights as an uninterrupted seeded run. Default: None.

    Returns:
        a `History`. With Ctrl-C (or a KeyboardInterrupt raised by a callback) training stops after the current
        batch, `on_train_end` runs and the History comes back with `.interrupted = True`.

    Raises:
        ValueError / TypeError: bad arguments or data (non-finite values, labels out of range, mismatched lengths).
        FloatingPointError: the loss became NaN or infinite (the message names the epoch and the batch).

    Example:
        >>> history = fit(model, x_train, y_train, epochs=5, validation_split=0.1, seed=0)
        >>> history.history["val_accuracy"][-1]
    """
    fn = "fit"
    _check_model(model, fn)
    epochs = _check_int(epochs, "epochs", fn, 1)
    batch_size = _check_int(batch_size, "batch_size", fn, 1)
    if steps_per_epoch is not None:
        steps_per_epoch = _check_int(steps_per_epoch, "steps_per_epoch", fn, 1)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: validation_split must be a float in [0, 1); got {validation_split!r}")
    if not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"{fn}: validation_split must be a float in [0, 1); got {validation_split!r}")
    validation_split = float(validation_split)
    seed = _check_seed(seed, fn)
    augment_batch = _compose_augment(augment, fn)
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(f"{fn}: callbacks must be a list of fastcnn.callbacks.Callback; got "
                        f"{type(callbacks).__name__}") from None
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, Callback):
            raise TypeError(f"{fn}: callbacks[{index}] must be a fastcnn.callbacks.Callback; got "
                            f"{type(callback).__name__} (wrap plain functions in LambdaCallback)")
    criterion = _check_criterion(loss, fn)
    if validation_data is not None and validation_split:
        raise ValueError(f"{fn}: give validation_data or validation_split, not both")

    # --- data ---
    if y is None and not isinstance(x, np.ndarray):
        if validation_split:
            raise ValueError(f"{fn}: validation_split needs array data (x and y); pass validation_data for batches")
        train = _Batches(x, "x", fn, steps_per_epoch, criterion)
        labels = None  # decided per batch
        classes = None  # learned from the first batch
    else:
        if y is None:
            raise TypeError(f"{fn}: y is required when x is an array; or pass x as an iterable of "
                            f"(x_batch, y_batch) pairs")
        inputs = _as_inputs(x, "x", fn)
        labels = _wants_labels(criterion, y)
        targets = _as_targets(y, "y", fn, inputs.shape[0], labels)
        classes = _class_count(model, inputs, labels, fn)
        if labels:
            _check_label_range(targets, classes, "y", fn)
        if validation_split:
            keep = int(inputs.shape[0] * (1.0 - validation_split))  # Keras's split point: the last part validates
            if keep < 1 or keep == inputs.shape[0]:
                raise ValueError(f"{fn}: validation_split={validation_split} of {inputs.shape[0]} samples leaves "
                                 f"{keep} for training and {inputs.shape[0] - keep} for validation; both need >= 1")
            validation_data = (inputs[keep:], targets[keep:])
            inputs, targets = inputs[:keep], targets[:keep]
        train = _Arrays(inputs, targets, batch_size)
    validation = None
    if validation_data is not None:
        validation, validation_labels = _validation_source(validation_data, 256 if batch_size < 256 else batch_size,
                                                           criterion, fn)
        if validation_labels and classes is not None:
            _check_label_range(validation.y, classes, "validation_data y", fn)

    # --- optimizer, randomness, resuming ---
    if optimizer is None:
        from .optim import Adam
        optimizer = Adam(model.parameters(), lr=1e-3)
    elif not (callable(getattr(optimizer, "step", None)) and callable(getattr(optimizer, "zero_grad", None))):
        raise TypeError(f"{fn}: optimizer must be an optimizer such as fastcnn.optim.SGD (with step and zero_grad); "
                        f"got {type(optimizer).__name__}")
    generators, dropouts = _make_generators(model, seed)
    history = History()
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    ordered = [history] + [c for c in callbacks if not isinstance(c, ModelCheckpoint)] + checkpoints
    context = _FitContext(generators, ordered)
    initial_epoch = 0
    if resume_from is not None:
        initial_epoch = _resume(resume_from, model, optimizer, context, dropouts, fn)
    if isinstance(train, _Batches) and train.one_shot and steps_per_epoch is None and epochs - initial_epoch > 1:
        raise ValueError(f"{fn}: x is a one-shot iterator (a generator), which can feed only one epoch; pass a "
                         f"callable returning a fresh iterable per epoch (lambda: make_batches()), a list, or "
                         f"steps_per_epoch for an endless generator")
    params = {"epochs": epochs, "batch_size": batch_size, "steps": train.steps,
              "samples": train.samples, "initial_epoch": initial_epoch, "do_validation": validation is not None}
    for callback in ordered:
        callback._bind(model, optimizer, params, context)

    # --- the loop ---
    loop = _Loop(model, criterion, optimizer, ordered, generators, augment_batch, labels, fn)
    model.stop_training = False
    interrupted = False
    with _modes(model, training=True), _Interrupts() as interrupts:
        optimizer.zero_grad()
        try:
            for callback in ordered:
                callback.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                model.train()
                for callback in ordered:
                    callback.on_epoch_begin(epoch, {})
                if isinstance(train, _Arrays):
                    batches = train.batches(generators["shuffle"].permutation(train.samples) if shuffle else None)
                else:
                    batches = train.batches(epoch)
                with contextlib.closing(_progress_bar(progress, train.samples, epoch, epochs)) as bar:
                    logs = loop.train_epoch(epoch, batches, bar, interrupts)
                    if interrupts.requested:
                        interrupted = True
                        break
                    if validation is not None:
                        batches = validation.batches(None if isinstance(validation, _Arrays) else epoch)
                        scores = _run_evaluation(model, criterion, batches, classes, fn)
                        logs.update({f"val_{k}": v for k, v in scores.items()})
                    bar.set_postfix_str(_postfix(logs), refresh=False)
                for callback in ordered:
                    callback.on_epoch_end(epoch, dict(logs))
                if model.stop_training or interrupts.requested:
                    interrupted = interrupts.requested
                    break
        except KeyboardInterrupt:  # during validation, in a callback, or a second Ctrl-C
            interrupted = True
        if interrupted:
            optimizer.zero_grad()  # a batch cut short may have left gradients behind
            if progress and sys.stderr is not None:
                print(f"fit: interrupted; stopped after {len(history.epoch)} complete epoch(s)", file=sys.stderr)
        history.interrupted = interrupted
        for callback in ordered:
            callback.on_train_end({"interrupted": interrupted})
    return history


class _Loop:
    """One epoch of the manual loop, with the running means Keras reports."""

    def __init__(self, model, criterion, optimizer, callbacks, generators, augment, labels, fn):
        self.model, self.criterion, self.optimizer, self.callbacks = model, criterion, optimizer, callbacks
        self.generators, self.augment, self.labels, self.fn = generators, augment, labels, fn
        self.classes = None  # for iterable input, learned from the first batch's logits

    def train_epoch(self, epoch: int, batches, bar, interrupts) -> dict:
        """The epoch's logs; returns early (with interrupts.requested set) on Ctrl-C or a KeyboardInterrupt."""
        model, optimizer, fn = self.model, self.optimizer, self.fn
        seen, loss_sum, correct, labelled = 0, 0.0, 0, True
        logs: dict = {}
        try:
            for batch, (xb, yb) in enumerate(batches):
                for callback in self.callbacks:
                    callback.on_batch_begin(batch, {"size": xb.shape[0]})
                if self.augment is not None:
                    xb = self.augment(xb, self.generators["augment"])
                logits = model(xb)
                labels = self.labels if self.labels is not None else (yb.ndim == 1 and yb.dtype.kind in "iu")
                if labels and self.labels is None:  # iterable input: check each batch against the model's classes
                    self.classes = self.classes or logits.shape[1]
                    _check_label_range(yb, self.classes, f"y in x batch {batch} of epoch {epoch + 1}", fn)
                # Checked before the loss sees them: NaN logits would only make it warn and return NaN.
                if not np.all(np.isfinite(logits)):
                    _diverged(fn, "the model's outputs became NaN or infinite", epoch, batch, optimizer)
                value, hits = _score(self.criterion, logits, yb, labels)
                if not math.isfinite(value):
                    _diverged(fn, f"the loss became {value}", epoch, batch, optimizer)
                model.backward(self.criterion.backward(), input_grad=False)
                optimizer.step()
                optimizer.zero_grad()

                seen += xb.shape[0]
                loss_sum += value * xb.shape[0]
                labelled = labelled and hits is not None
                correct += hits or 0
                logs = {"loss": loss_sum / seen}
                if labelled:
                    logs["accuracy"] = correct / seen
                if _current_lr(optimizer) is not None:
                    logs["lr"] = _current_lr(optimizer)
                bar.update(xb.shape[0])
                bar.set_postfix_str(_postfix(logs), refresh=False)
                for callback in self.callbacks:
                    callback.on_batch_end(batch, dict(logs, size=xb.shape[0]))
                if model.stop_training or interrupts.requested:
                    break
        except KeyboardInterrupt:
            interrupts.requested = True
        if _current_lr(optimizer) is not None:  # what a per-batch schedule may have changed last
            logs["lr"] = _current_lr(optimizer)
        return logs


def evaluate(model, x, y, batch_size: int = 256, loss=None) -> dict:
    """Mean loss and accuracy of `model` on (x, y) in eval mode inside `fastcnn.no_grad()` (modes restored).

    Returns:
        {"loss": float, "accuracy": float}; "accuracy" only when y holds class labels.
    """
    fn = "evaluate"
    _check_model(model, fn)
    batch_size = _check_int(batch_size, "batch_size", fn, 1)
    criterion = _check_criterion(loss, fn)
    inputs = _as_inputs(x, "x", fn)
    labels = _wants_labels(criterion, y)
    targets = _as_targets(y, "y", fn, inputs.shape[0], labels)
    classes = _class_count(model, inputs, labels, fn)
    if labels:
        _check_label_range(targets, classes, "y", fn)
    return _run_evaluation(model, criterion, _Arrays(inputs, targets, batch_size).batches(), classes)


def predict(model, x, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, classes), float32: the softmax of the model's logits, in eval mode inside
    `fastcnn.no_grad()` (modes restored). The softmax subtracts each row's maximum, so large logits cannot
    overflow."""
    fn = "predict"
    _check_model(model, fn)
    batch_size = _check_int(batch_size, "batch_size", fn, 1)
    inputs = _as_inputs(x, "x", fn)
    outputs = []
    with _modes(model, training=False), _grad_mode.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            logits = np.asarray(model(inputs[start:start + batch_size]), dtype=np.float64)
            if logits.ndim != 2:
                raise ValueError(f"{fn}: the model must output logits of shape (N, classes); got {logits.shape}")
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            outputs.append((shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32))
    return np.concatenate(outputs)


# ---------------------------------------------------------------------------------------------------------------
# Gradients

def _restore_dropout_generators(dropouts, saved):
    # Dropout has no public getter for its generator; `_rng` is read and written back so that gradcheck leaves the
    # model's randomness exactly as it found it.
    for module, generator in zip(dropouts, saved):
        module._rng = generator


_FALLBACK_STEPS = (0.1, 0.3, 3.0, 10.0)  # eps multiples tried before an element counts as wrong


def _differences(flat: np.ndarray, i: int, eps: float, base: float, objective) -> list:
    """[central, forward, backward] differences of `objective` in element i of `flat`, each divided by the step
    actually taken in float32 (x + eps is rounded)."""
    original = flat[i]
    flat[i] = original + np.float32(eps)
    up, step_up = objective(), float(flat[i]) - float(original)
    flat[i] = original - np.float32(eps)
    down, step_down = objective(), float(original) - float(flat[i])
    flat[i] = original
    return [(up - down) / (step_up + step_down), (up - base) / step_up, (base - down) / step_down]


def gradcheck(module, x, *, eps: float = 1e-3, rtol: float = 1e-2, atol: float = 1e-3, seed: int = 0,
              max_elements: int | None = None) -> bool:
    """Check `module.backward` against central finite differences of L = sum(module(x) * R), R random.

    The input gradient and every trainable parameter's gradient are compared element by element:
    |analytic - numeric| <= atol + rtol * |numeric|. Forward passes are float32 (the kernels'), L is accumulated in
    float64 and each difference is divided by the step actually taken in float32. A correct gradient can still
    miss at one step in two ways: a kink (ReLU at 0, a max-pooling switch) inside [x - eps, x + eps], which a smaller
    step or a one-sided difference on the smooth side avoids, and float32 rounding, which grows as 1/eps (BatchNorm
    couples every output to every input) and which a larger step shrinks. So an element whose central difference
    disagrees is accepted when a central or one-sided difference at eps/10, eps/3, 3 eps or 10 eps agrees; a wrong
    gradient (even 2% off) agrees with none. Dropout layers reuse one fixed mask in every pass. The module's mode
    decides the behaviour checked (BatchNorm's batch statistics in train mode); param.grad, buffers and Dropout's
    generators are restored afterwards.

    Args:
        module: the module to check.
        x: an input batch (kept small: two forward passes per element).
        eps: the finite-difference step. Default: 1e-3.
        rtol, atol: tolerances. Defaults: 1e-2, 1e-3.
        seed: seeds R (and the element sample). Default: 0.
        max_elements: check at most this many random elements per tensor. Default: None (all).

    Returns:
        True. Raises AssertionError naming the tensor, the worst element and both values otherwise.

    Example:
        >>> gradcheck(fastcnn.nn.Conv2d(2, 3, 3, padding=1, seed=0), np.random.randn(2, 2, 5, 5))
        True
    """
    fn = "gradcheck"
    _check_model(module, fn)
    x = _as_inputs(x, "x", fn).copy()
    for name, value in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{fn}: {name} must be a finite float >= 0; got {value!r}")
    if eps <= 0:
        raise ValueError(f"{fn}: eps must be > 0; got {eps!r}")
    if max_elements is not None:
        max_elements = _check_int(max_elements, "max_elements", fn, 1)
    rng = np.random.default_rng(_check_seed(seed, fn))
    owner = type(module).__name__
    all_params = [p for _, p in module.named_parameters()]
    checked = [(f"parameter {name!r}", p.data) for name, p in module.named_parameters() if p.requires_grad]
    saved_grads = [p.grad.copy() for p in all_params]
    saved_buffers = [(buffer, buffer.copy()) for _, buffer in module.named_buffers()]
    dropouts = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    saved_generators = [m._rng for m in dropouts]
    mask_seed = int(rng.integers(2**31))

    def forward(recording: bool):
        for m in dropouts:
            m.reseed(mask_seed)
        if recording:
            with _grad_mode.recording(param_grads=True):
                return np.asarray(module(x))
        with _grad_mode.no_grad():
            return np.asarray(module(x))

    try:
        for p in all_params:
            p.zero_grad()
        y = forward(recording=True)
        projection = rng.standard_normal(y.shape)
        grad_x = module.backward(projection.astype(np.float32))
        if grad_x is None or np.shape(grad_x) != x.shape:
            raise AssertionError(f"{fn}: {owner}.backward returned {None if grad_x is None else np.shape(grad_x)} "
                                 f"for the input gradient; expected shape {x.shape}")
        analytic = {"input": np.asarray(grad_x, dtype=np.float64)}
        for name, p in module.named_parameters():
            if p.requires_grad:
                analytic[f"parameter {name!r}"] = p.grad.astype(np.float64)

        def objective() -> float:
            return float(np.sum(forward(recording=False).astype(np.float64) * projection))

        base = objective()
        failures = []
        for label, array in [("input", x)] + checked:
            flat = array.reshape(-1)
            expected = analytic[label].reshape(-1)
            indices = np.arange(flat.size)
            if max_elements is not None and flat.size > max_elements:
                indices = np.sort(rng.choice(flat.size, size=max_elements, replace=False))
            bad = []
            for i in indices:
                a = expected[i]
                estimates = _differences(flat, int(i), eps, base, objective)
                if abs(a - estimates[0]) <= atol + rtol * abs(estimates[0]):
                    continue
                # A kink or float32 rounding can make a correct gradient miss at this one step (see the docstring)
                for factor in _FALLBACK_STEPS:
                    estimates += _differences(flat, int(i), factor * eps, base, objective)
                if any(abs(a - d) <= atol + rtol * abs(d) for d in estimates[1:]):
                    continue
                bad.append((abs(a - estimates[0]), int(i), a, estimates[0]))
            if bad:
                error, i, a, central = max(bad)
                index = tuple(int(k) for k in np.unravel_index(i, array.shape))
                failures.append(f"gradient of the {label} differs at {len(bad)} of {len(indices)} elements; worst at "
                                f"index {index}: backward gave {a:.6g}, finite differences {central:.6g}")
        if failures:
            raise AssertionError(f"{fn}: {owner}: " + "; ".join(failures)
                                 + f" (eps={eps}, rtol={rtol}, atol={atol})")
    finally:
        for p, grad in zip(all_params, saved_grads):
            p.grad[...] = grad
        for buffer, value in saved_buffers:
            buffer[...] = value
        _restore_dropout_generators(dropouts, saved_generators)
    return True


def input_gradient(model, x, target) -> np.ndarray:
    """d(logit of class `target`)/dx for each image (a saliency map), in eval mode, leaving every param.grad alone.

    Args:
        model: a module producing logits (N, classes).
        x: inputs (N, ...).
        target: one class for every image (an int) or one per image (N,).

    Returns:
        float32 array of x's shape.
    """
    fn = "input_gradient"
    _check_model(model, fn)
    inputs = _as_inputs(x, "x", fn)
    if np.ndim(target) == 0:
        target = np.full(inputs.shape[0], target)
    targets = _as_labels(target, "target", fn, inputs.shape[0])
    with _modes(model, training=False), _grad_mode.recording(param_grads=False):
        logits = np.asarray(model(inputs))
        if logits.ndim != 2:
            raise ValueError(f"{fn}: the model must output logits of shape (N, classes); got {logits.shape}")
        _check_label_range(targets, logits.shape[1], "target", fn)
        seed_grad = np.zeros(logits.shape, dtype=np.float32)
        seed_grad[np.arange(inputs.shape[0]), targets] = 1.0
        grad = model.backward(seed_grad, input_grad=True)
    return np.asarray(grad, dtype=np.float32)
