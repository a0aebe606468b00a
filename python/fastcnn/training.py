"""Training, evaluation and gradient tools over the manual loop (forward, loss, backward, step).

`fit` is the loop every fastcnn user would otherwise write, with what makes it safe to leave running: input checks
up front, a stop with a clear error when the loss turns NaN, Ctrl-C that stops after the current batch and keeps
the model usable, callbacks (early stopping, checkpoints, learning-rate schedules), a tqdm progress bar, seeded
runs that are bitwise reproducible, and resuming from a checkpoint. `gradcheck` and `input_gradient` check and use
`Module.backward` directly.

This module holds `History`, the loop and `evaluate`/`predict`; it imports its argument checks and batching from
`_batches`, its random generators and resuming from `_fit_state`, and the gradient tools from `_gradients`.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading

import numpy as np

from . import _grad_mode
from ._batches import (
    _Arrays,
    _as_inputs,
    _as_targets,
    _Batches,
    _check_criterion,
    _check_int,
    _check_label_range,
    _check_model,
    _check_seed,
    _class_count,
    _compose_augment,
    _modes,
    _validation_source,
    _wants_labels,
)
from ._fit_state import _FitContext, _make_generators, _resume
from ._gradients import gradcheck, input_gradient
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


def _forward_within_memory(model, x):
    """model(x) in inference, the batch halved as often as a kernel refuses it for fastcnn's memory limit (which
    it does before allocating): a huge batch_size still runs, in smaller pieces. Each image's result is equal up to
    float32 rounding, not bitwise: a kernel may sum in another order for fewer rows (Linear does for <= 4)."""
    try:
        return model(x)
    except MemoryError:
        if len(x) <= 1:
            raise
        half = len(x) // 2
        return np.concatenate([_forward_within_memory(model, x[:half]), _forward_within_memory(model, x[half:])])


def _run_evaluation(model, criterion, batches, classes=None, fn: str = "evaluate") -> dict:
    """Loss and accuracy over batches, in eval mode, recording nothing."""
    total, loss_sum, correct, labelled = 0, 0.0, 0, True
    with _modes(model, training=False), _grad_mode.no_grad():
        for xb, yb in batches:
            logits = _forward_within_memory(model, xb)
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


def _diverged(fn: str, what: str, epoch: int, batch: int, optimizer):
    raise FloatingPointError(
        f"{fn}: {what} at epoch {epoch + 1}, batch {batch + 1}; training stopped before this batch's update. "
        f"Lower the learning rate (now {_current_lr(optimizer)}) or check the data's scale")


# ---------------------------------------------------------------------------------------------------------------


def _checked_arrays(model, criterion, x, y, fn: str):
    """Array data for fit and evaluate: (inputs, whether y holds class labels, targets, number of classes)."""
    inputs = _as_inputs(x, "x", fn)
    labels = _wants_labels(criterion, y)
    targets = _as_targets(y, "y", fn, inputs.shape[0], labels)
    classes = _class_count(model, inputs, labels, fn)
    if labels:
        _check_label_range(targets, classes, "y", fn)
    return inputs, labels, targets, classes

def fit(model, x, y=None, *, epochs, batch_size=64, optimizer=None, loss=None, validation_data=None,
        validation_split=0.0, callbacks=(), augment=None, shuffle=True, seed=None, progress=True,
        steps_per_epoch=None, resume_from=None, distributed=None) -> History:
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
        distributed: data-parallel training on every process of an `mpiexec` launch (docs/distributed.md): True
            (`fastcnn.distributed.init()`) or a `fastcnn.distributed.Communicator`. Each process then trains on its
            shard of the data with `batch_size` samples per batch (the global batch is batch_size x processes),
            gradients are averaged across processes every step, and only the first process (rank 0) shows progress
            and writes checkpoints. Default: None (this process alone).

    Returns:
        a `History`. With Ctrl-C (or a KeyboardInterrupt raised by a callback) training stops after the current
        batch, `on_train_end` runs and the History comes back with `.interrupted = True`. With `distributed=` over
        several processes a Ctrl-C stops them all together after the next batch, but a KeyboardInterrupt that cuts
        the loop (a second Ctrl-C, or one raised by a callback) ends the whole launch with exit status 130: the
        processes could no longer agree where to stop (docs/distributed.md).

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
    run = None
    if distributed is not None and distributed is not False:
        from .distributed._fit import _FitRun  # imported here: plain training never loads it
        run = _FitRun.create(distributed, seed, fn)
        seed, progress = run.seed, progress and run.is_root
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
        inputs, labels, targets, classes = _checked_arrays(model, criterion, x, y, fn)
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
    # Under data parallelism only rank 0 writes checkpoints: every rank holds the same weights.
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint) and (run is None or run.is_root)]
    ordered = [history] + [c for c in callbacks if not isinstance(c, ModelCheckpoint)] + checkpoints
    context = _FitContext(generators, ordered)
    initial_epoch = 0
    if resume_from is not None:
        initial_epoch = _resume(resume_from, model, optimizer, context, dropouts, fn)
    if isinstance(train, _Batches) and train.one_shot and steps_per_epoch is None and epochs - initial_epoch > 1:
        raise ValueError(f"{fn}: x is a one-shot iterator (a generator), which can feed only one epoch; pass a "
                         f"callable returning a fresh iterable per epoch (lambda: make_batches()), a list, or "
                         f"steps_per_epoch for an endless generator")
    steps, samples = (train.steps, train.samples) if run is None else run.epoch_size(train, batch_size)
    params = {"epochs": epochs, "batch_size": batch_size, "steps": steps,
              "samples": samples, "initial_epoch": initial_epoch, "do_validation": validation is not None}
    for callback in ordered:
        callback._bind(model, optimizer, params, context)

    # --- the loop ---
    loop_class = _Loop if run is None else run.start(model, optimizer)
    loop = loop_class(model, criterion, optimizer, ordered, generators, augment_batch, labels, fn)
    model.stop_training = False
    interrupted = False
    with _modes(model, training=True), _Interrupts() as interrupts:
        optimizer.zero_grad()
        try:
            for callback in ordered:
                callback.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                model.train()
                if run is not None:
                    run.seed_epoch(generators, dropouts, epoch)
                for callback in ordered:
                    callback.on_epoch_begin(epoch, {})
                if isinstance(train, _Arrays):
                    if run is not None:
                        order = run.shard(epoch, train.samples, shuffle)
                    else:
                        order = generators["shuffle"].permutation(train.samples) if shuffle else None
                    batches = train.batches(order)
                else:
                    batches = train.batches(epoch)
                with contextlib.closing(_progress_bar(progress, samples, epoch, epochs)) as bar:
                    logs = loop.train_epoch(epoch, batches, bar, interrupts)
                    if interrupts.requested:
                        interrupted = True
                        break
                    if validation is not None:
                        logs.update({f"val_{k}": v for k, v in loop.validate(validation, epoch, classes).items()})
                    bar.set_postfix_str(_postfix(logs), refresh=False)
                for callback in ordered:
                    callback.on_epoch_end(epoch, dict(logs))
                if loop.stop_requested(interrupts):
                    interrupted = interrupts.requested
                    break
        except KeyboardInterrupt:  # during validation, in a callback, or a second Ctrl-C
            loop.interrupted_at_once(interrupts)
            interrupted = True
        if interrupted:
            optimizer.zero_grad()  # a batch cut short may have left gradients behind
            if progress and sys.stderr is not None:
                print(f"fit: interrupted; stopped after {len(history.epoch)} complete epoch(s)", file=sys.stderr)
        history.interrupted = interrupted
        for callback in ordered:
            callback.on_train_end({"interrupted": interrupted})
    if run is not None:
        run.check_in_sync(model)
    return history


class _Loop:
    """One epoch of the manual loop, with the running means Keras reports."""

    def __init__(self, model, criterion, optimizer, callbacks, generators, augment, labels, fn):
        self.model, self.criterion, self.optimizer, self.callbacks = model, criterion, optimizer, callbacks
        self.generators, self.augment, self.labels, self.fn = generators, augment, labels, fn
        self.classes = None  # for iterable input, learned from the first batch's logits

    def train_epoch(self, epoch: int, batches, bar, interrupts) -> dict:
        """The epoch's logs; returns early (with interrupts.requested set) on Ctrl-C or a KeyboardInterrupt."""
        optimizer = self.optimizer
        seen, loss_sum, correct, labelled = 0, 0.0, 0, True
        logs: dict = {}
        try:
            for batch, (xb, yb) in enumerate(batches):
                for callback in self.callbacks:
                    callback.on_batch_begin(batch, {"size": xb.shape[0]})
                count, value, hits = self.train_step(epoch, batch, xb, yb, interrupts)
                seen += count
                loss_sum += value * count
                labelled = labelled and hits is not None
                correct += hits or 0
                logs = {"loss": loss_sum / seen}
                if labelled:
                    logs["accuracy"] = correct / seen
                if _current_lr(optimizer) is not None:
                    logs["lr"] = _current_lr(optimizer)
                bar.update(count)
                bar.set_postfix_str(_postfix(logs), refresh=False)
                for callback in self.callbacks:
                    callback.on_batch_end(batch, dict(logs, size=xb.shape[0]))
                if self.stop_requested(interrupts):
                    break
        except KeyboardInterrupt:
            self.interrupted_at_once(interrupts)
        if _current_lr(optimizer) is not None:  # what a per-batch schedule may have changed last
            logs["lr"] = _current_lr(optimizer)
        return logs

    def forward_and_score(self, epoch: int, batch: int, xb, yb):
        """(logits, batch mean loss, correct predictions or None) of one training batch, augmented first."""
        if self.augment is not None:
            xb = self.augment(xb, self.generators["augment"])
        logits = self.model(xb)
        labels = self.labels if self.labels is not None else (yb.ndim == 1 and yb.dtype.kind in "iu")
        if labels and self.labels is None:  # iterable input: check each batch against the model's classes
            self.classes = self.classes or logits.shape[1]
            _check_label_range(yb, self.classes, f"y in x batch {batch} of epoch {epoch + 1}", self.fn)
        # Checked before the loss sees them: NaN logits would only make it warn and return NaN.
        if not np.all(np.isfinite(logits)):
            return logits, math.nan, None
        value, hits = _score(self.criterion, logits, yb, labels)
        return logits, value, hits

    def train_step(self, epoch: int, batch: int, xb, yb, interrupts):
        """Forward, loss, backward and update on one batch: (samples, mean loss, correct predictions or None)."""
        logits, value, hits = self.forward_and_score(epoch, batch, xb, yb)
        if not np.all(np.isfinite(logits)):
            _diverged(self.fn, "the model's outputs became NaN or infinite", epoch, batch, self.optimizer)
        if not math.isfinite(value):
            _diverged(self.fn, f"the loss became {value}", epoch, batch, self.optimizer)
        self.model.backward(self.criterion.backward(), input_grad=False)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return xb.shape[0], value, hits

    def interrupted_at_once(self, interrupts) -> None:
        """A KeyboardInterrupt cut the loop wherever it was (a second Ctrl-C, or raised by a callback): stop."""
        interrupts.requested = True

    def stop_requested(self, interrupts) -> bool:
        """Whether to stop after this batch or epoch: a callback set model.stop_training, or Ctrl-C."""
        return self.model.stop_training or interrupts.requested

    def validate(self, validation, epoch: int, classes) -> dict:
        batches = validation.batches(None if isinstance(validation, _Arrays) else epoch)
        return _run_evaluation(self.model, self.criterion, batches, classes, self.fn)


def evaluate(model, x, y, batch_size: int = 256, loss=None) -> dict:
    """Mean loss and accuracy of `model` on (x, y) in eval mode inside `fastcnn.no_grad()` (modes restored).

    Returns:
        {"loss": float, "accuracy": float}; "accuracy" only when y holds class labels.
    """
    fn = "evaluate"
    _check_model(model, fn)
    batch_size = _check_int(batch_size, "batch_size", fn, 1)
    criterion = _check_criterion(loss, fn)
    inputs, labels, targets, classes = _checked_arrays(model, criterion, x, y, fn)
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
            logits = np.asarray(_forward_within_memory(model, inputs[start:start + batch_size]), dtype=np.float64)
            if logits.ndim != 2:
                raise ValueError(f"{fn}: the model must output logits of shape (N, classes); got {logits.shape}")
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            outputs.append((shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32))
    return np.concatenate(outputs)
