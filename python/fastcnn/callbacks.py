"""Callbacks for `fastcnn.training.fit`, shaped like Keras's: hooks called at the start and end of training, of
each epoch and of each batch, with a `logs` dict of the values measured so far.

`fit` passes these logs:
    on_batch_end(batch, logs):  loss, accuracy (running means over the epoch so far), lr, size (of the batch)
    on_epoch_end(epoch, logs):  loss, accuracy (means over the epoch), lr, and val_loss, val_accuracy when there is
                                validation data
Epochs and batches are numbered from 0. `accuracy` is logged when the targets are class labels.

A callback stops training by setting `self.model.stop_training = True`; fit stops after the current batch (and
still finishes that epoch's validation and on_epoch_end). Callbacks that keep state which a resumed run needs
(learning-rate schedules, early stopping) return it from `state_dict()`; `ModelCheckpoint` stores it.
"""
from __future__ import annotations

import inspect
import math
import os

import numpy as np

from . import io as _io

__all__ = ["Callback", "LambdaCallback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler"]


class Callback:
    """Base class: override the hooks you need. `fit` sets `model`, `optimizer` and `params` (epochs, batch_size,
    steps, samples, initial_epoch) before `on_train_begin`."""

    def __init__(self):
        self.model = None
        self.optimizer = None
        self.params: dict = {}
        self._fit = None  # fit's private context: random state and the other callbacks, for ModelCheckpoint

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = dict(params)

    def _bind(self, model, optimizer, params: dict, context) -> None:
        if not hasattr(self, "params"):  # a subclass that forgot super().__init__()
            Callback.__init__(self)
        self.set_model(model)
        self.set_params(params)
        self.optimizer = optimizer
        self._fit = context

    def on_train_begin(self, logs=None) -> None:
        pass

    def on_train_end(self, logs=None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        pass

    def on_batch_begin(self, batch: int, logs=None) -> None:
        pass

    def on_batch_end(self, batch: int, logs=None) -> None:
        pass

    def state_dict(self):
        """JSON-able state that a resumed run needs (None when there is none); stored by ModelCheckpoint."""
        return None

    def load_state_dict(self, state) -> None:
        pass


class LambdaCallback(Callback):
    """A callback made of plain functions, for one-off needs.

    Example:
        >>> LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
    """

    _HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_batch_begin", "on_batch_end")

    def __init__(self, **hooks):
        super().__init__()
        for name, function in hooks.items():
            if name not in self._HOOKS:
                raise TypeError(f"LambdaCallback: unknown hook {name!r}; expected some of {', '.join(self._HOOKS)}")
            if not callable(function):
                raise TypeError(f"LambdaCallback: {name} must be callable; got {type(function).__name__}")
            setattr(self, name, function)


# ---------------------------------------------------------------------------------------------------------------

class _Monitor:
    """Which logged value to watch, and whether smaller or larger is better."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float = 0.0):
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"{owner}: monitor must be the name of a logged value such as 'val_loss'; got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max'; got {mode!r}")
        if mode == "auto":  # Keras's rule: accuracies grow, everything else (losses) shrinks
            mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
        delta = float(min_delta)
        if not math.isfinite(delta) or delta < 0:
            raise ValueError(f"{owner}: min_delta must be a finite float >= 0; got {min_delta!r}")
        self.owner, self.monitor, self.mode, self.min_delta = owner, monitor, mode, delta

    def value(self, logs) -> float:
        logs = logs or {}
        if self.monitor not in logs:
            hint = " (val_* values need validation_data or validation_split in fit)" if self.monitor.startswith(
                "val_") else ""
            raise ValueError(f"{self.owner}: monitor {self.monitor!r} is not among the logged values "
                             f"{sorted(logs)}{hint}")
        return float(logs[self.monitor])

    def initial(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def improved(self, current: float, best: float) -> bool:
        if not math.isfinite(current):
            return False
        if self.mode == "min":
            return current < best - self.min_delta
        return current > best + self.min_delta


class EarlyStopping(Callback):
    """Stop training when a monitored value has stopped improving, as `keras.callbacks.EarlyStopping`.

    Training stops after `patience` consecutive epochs without an improvement larger than `min_delta` (with
    patience=0, after the first such epoch).

    Args:
        monitor: the logged value to watch. Default: "val_loss".
        patience: epochs without improvement to tolerate. Default: 0.
        min_delta: the smallest change that counts as an improvement. Default: 0.
        mode: "min", "max", or "auto" (max for accuracies, min otherwise). Default: "auto".
        restore_best_weights: at the end of training (early stop, last epoch or interrupt), load the weights and
            buffers of the best epoch. Default: False.

    Attributes:
        best, best_epoch, stopped_epoch (None unless it stopped training), wait.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False):
        super().__init__()
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0; got {patience!r}")
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    @property
    def monitor(self) -> str:
        return self._monitor.monitor

    @property
    def mode(self) -> str:
        return self._monitor.mode

    def _reset(self):
        self.best = self._monitor.initial()
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None
        self._restored = False

    def on_train_begin(self, logs=None):
        if not self._restored:  # a new run starts afresh; a resumed one keeps what load_state_dict restored
            self._reset()
        self._restored = False

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor.value(logs)
        if self._monitor.improved(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)

    def state_dict(self):
        best = self.best if math.isfinite(self.best) else None
        return {"best": best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state):
        self.best = self._monitor.initial() if state.get("best") is None else float(state["best"])
        self.best_epoch, self.wait = state.get("best_epoch"), int(state.get("wait", 0))
        self._restored = True


class ModelCheckpoint(Callback):
    """Save a resumable checkpoint at the end of epochs: the model, the optimizer's state, the number of completed
    epochs, fit's random generators and the other callbacks' state, in one .npz (see `fastcnn.io.save_checkpoint`).

    Continue training from it with `fit(..., resume_from=path)`; `fastcnn.io.load(path)` returns just the model.
    ModelCheckpoint runs after the other callbacks at each epoch end, so the checkpoint holds the state the next
    epoch starts from (for instance the learning rate a scheduler has just set).

    Args:
        path: the file; may hold `str.format` fields filled from the epoch (counted from 1) and the logs, e.g.
            "ckpt-{epoch:02d}-{val_loss:.3f}.npz".
        monitor: the logged value that decides the best epoch with save_best_only. Default: "val_loss".
        save_best_only: save only when the monitored value improves. Default: False (save every epoch).
        mode: "min", "max" or "auto". Default: "auto".

    Attributes:
        best, last_saved (the path most recently written, or None).
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto"):
        super().__init__()
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint: path must be a str or os.PathLike; got {type(path).__name__}")
        self.path = os.fspath(path)
        self._monitor = _Monitor("ModelCheckpoint", monitor, mode)
        self.save_best_only = bool(save_best_only)
        self.best = self._monitor.initial()
        self.last_saved = None
        self._restored = False

    def on_train_begin(self, logs=None):
        if not self._restored:
            self.best = self._monitor.initial()
        self._restored = False

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.save_best_only:
            current = self._monitor.value(logs)
            if not self._monitor.improved(current, self.best):
                return
            self.best = current
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"ModelCheckpoint: cannot fill in the path {self.path!r} from epoch and logs "
                             f"{sorted(logs)}: {error!r}") from None
        context = self._fit
        _io.save_checkpoint(
            path, self.model, self.optimizer, epoch=epoch + 1,
            rng_state=None if context is None else context.rng_state(),
            callbacks_state=None if context is None else context.callbacks_state(),
        )
        self.last_saved = path

    def state_dict(self):
        return {"best": self.best if math.isfinite(self.best) else None}

    def load_state_dict(self, state):
        self.best = self._monitor.initial() if state.get("best") is None else float(state["best"])
        self._restored = True


def _accepts_two_arguments(function) -> bool:
    try:
        inspect.signature(function).bind(0, 0.1)
        return True
    except TypeError:
        return False
    except ValueError:  # builtins without a signature: call them Keras's way
        return True


class LearningRateScheduler(Callback):
    """Change the learning rate between epochs, from an lr_scheduler object or a function.

    - A `fastcnn.optim.lr_scheduler` object (StepLR, ExponentialLR, CosineAnnealingLR, ...) built on fit's
      optimizer: its `step()` runs at the end of every epoch, as in a PyTorch training loop.
    - `ReduceLROnPlateau`: `step(value)` runs at the end of every epoch with the monitored value: `monitor`, or by
      default val_loss when validation data is given and loss otherwise.
    - A function `schedule(epoch) -> lr` or `schedule(epoch, lr) -> lr` (Keras's form): called at the start of
      every epoch (numbered from 0); its result becomes every parameter group's lr.

    The lr each epoch trained with is logged as "lr" (in `History.history["lr"]`).

    Args:
        schedule: the scheduler object or function.
        monitor: the value ReduceLROnPlateau is fed. Default: None (val_loss, falling back to loss).
    """

    def __init__(self, schedule, monitor: str | None = None):
        super().__init__()
        if callable(getattr(schedule, "step", None)):
            self.scheduler, self.function = schedule, None
        elif callable(schedule):
            self.scheduler, self.function = None, schedule
            self._two_arguments = _accepts_two_arguments(schedule)
        else:
            raise TypeError(f"LearningRateScheduler: schedule must be an lr_scheduler object or a function "
                            f"epoch -> lr; got {type(schedule).__name__}")
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise TypeError(f"LearningRateScheduler: monitor must be a logged value's name or None; got {monitor!r}")
        self.monitor = monitor

    def _is_plateau(self) -> bool:
        try:
            from .optim.lr_scheduler import ReduceLROnPlateau
        except ImportError:
            ReduceLROnPlateau = ()
        return isinstance(self.scheduler, ReduceLROnPlateau) or type(self.scheduler).__name__ == "ReduceLROnPlateau"

    def on_train_begin(self, logs=None):
        owned = getattr(self.scheduler, "optimizer", self.optimizer)
        if self.scheduler is not None and owned is not self.optimizer:
            raise ValueError("LearningRateScheduler: the scheduler drives a different optimizer than the one fit "
                             "trains with; build the optimizer first, pass it to both the scheduler and "
                             "fit(optimizer=...)")
        if self.function is not None and not hasattr(self.optimizer, "param_groups"):
            raise TypeError("LearningRateScheduler: fit's optimizer has no param_groups whose lr could be set")

    def on_epoch_begin(self, epoch, logs=None):
        if self.function is None:
            return
        current = float(self.optimizer.param_groups[0]["lr"])
        lr = self.function(epoch, current) if self._two_arguments else self.function(epoch)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(lr)) or lr < 0:
            raise ValueError(f"LearningRateScheduler: the schedule must return a finite float >= 0; got {lr!r} "
                             f"for epoch {epoch}")
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def on_epoch_end(self, epoch, logs=None):
        if self.scheduler is None:
            return
        if self._is_plateau():
            logs = logs or {}
            if self.monitor is not None:
                name = self.monitor
            else:
                name = "val_loss" if "val_loss" in logs else "loss"
            if name not in logs:
                raise ValueError(f"LearningRateScheduler: monitor {name!r} is not among the logged values "
                                 f"{sorted(logs)}")
            self.scheduler.step(float(logs[name]))
        else:
            self.scheduler.step()

    def state_dict(self):
        if self.scheduler is None or not callable(getattr(self.scheduler, "state_dict", None)):
            return None
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state):
        if self.scheduler is not None and state and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
