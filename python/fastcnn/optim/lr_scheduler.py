"""Learning-rate schedules: they set `group["lr"]` of an optimizer's parameter groups, once per epoch.

As in PyTorch, call `scheduler.step()` after the epoch's `optimizer.step()` calls (`ReduceLROnPlateau.step`
takes the monitored metric). Each scheduler's `state_dict()` holds only JSON-able values.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from . import Optimizer, _check_choice, _check_float, _check_int, _describe

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


def _check_optimizer(optimizer, owner: str) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner}: optimizer must be a fastcnn.optim.Optimizer; got {type(optimizer).__name__}")
    return optimizer


def _check_lr_list(values, name: str, count: int, owner: str) -> list[float]:
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise ValueError(f"{owner}: {name} must be a list of {count} learning rates, one per parameter group; got "
                         f"{_describe(values)}")
    return [_check_float(value, f"{name}[{i}]", owner) for i, value in enumerate(values)]


class LRScheduler:
    """Base class of the epoch-based schedules.

    Constructing a scheduler records each group's current lr as `group["initial_lr"]` (unless a scheduler already
    did), which becomes `base_lrs`, and sets epoch 0. Each `step()` advances `last_epoch` and sets every group's
    lr to `get_lr()`. A subclass implements `get_lr()` and lists its arguments in `_ARGUMENTS`, checked by
    `_check_arguments`.

    Args:
        optimizer: the `Optimizer` whose learning rates it sets.
    """

    _ARGUMENTS: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer):
        owner = type(self).__name__
        self.optimizer = _check_optimizer(optimizer, owner)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()  # epoch 0: the lr the schedule starts from

    @classmethod
    def _check_arguments(cls, arguments: dict, owner: str) -> dict:
        """The subclass's arguments, validated and normalised."""
        return {}

    def get_lr(self) -> list[float]:
        """The learning rate of each group at epoch `last_epoch` (called by `step()`)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set each group's lr; call it after the epoch's optimizer steps."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates the last `step()` set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """The schedule's arguments and position, JSON-able (the optimizer is not included: save it separately)."""
        state = {name: getattr(self, name) for name in self._ARGUMENTS}
        state.update(base_lrs=list(self.base_lrs), last_epoch=self.last_epoch, last_lr=list(self._last_lr))
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore what `state_dict()` saved. The optimizer's lrs are not changed: load the optimizer's own state."""
        owner = f"{type(self).__name__}.load_state_dict"
        expected = set(self._ARGUMENTS) | {"base_lrs", "last_epoch", "last_lr"}
        state = _check_state_keys(state_dict, expected, owner)
        arguments = type(self)._check_arguments({name: state[name] for name in self._ARGUMENTS}, owner)
        count = len(self.optimizer.param_groups)
        base_lrs = _check_lr_list(state["base_lrs"], "base_lrs", count, owner)
        last_lr = _check_lr_list(state["last_lr"], "last_lr", count, owner)
        last_epoch = _check_int(state["last_epoch"], "last_epoch", owner, minimum=0)
        self.__dict__.update(arguments, base_lrs=base_lrs, last_epoch=last_epoch, _last_lr=last_lr)


def _check_state_keys(state_dict, expected: set, owner: str) -> Mapping:
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{owner}: state_dict must be a dict; got {_describe(state_dict)}")
    if set(state_dict) != expected:
        raise ValueError(f"{owner}: keys do not match: missing {sorted(expected - set(state_dict))}, unexpected "
                         f"{sorted(set(state_dict) - expected, key=str)}")
    return state_dict


class StepLR(LRScheduler):
    r"""Multiplies each group's lr by `gamma` every `step_size` epochs: at epoch e the lr is
    :math:`\text{base\_lr} \cdot \gamma^{\lfloor e / \text{step\_size} \rfloor}` when nothing else changes it.

    Like PyTorch's, it multiplies the current lr (chainable with other changes) rather than recomputing it.

    Args:
        optimizer: the wrapped `Optimizer`.
        step_size: the number of epochs between decays, an int >= 1.
        gamma: the multiplicative factor, a finite float > 0. Default: 0.1.

    Example:
        >>> scheduler = StepLR(optimizer, step_size=30, gamma=0.1)   # lr 0.05, 0.005 from epoch 30, ...
        >>> for epoch in range(100):
        ...     train(...)   # calls optimizer.step() per batch
        ...     scheduler.step()
    """

    _ARGUMENTS = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.__dict__.update(self._check_arguments(dict(step_size=step_size, gamma=gamma), "StepLR"))
        super().__init__(optimizer)

    @classmethod
    def _check_arguments(cls, arguments: dict, owner: str) -> dict:
        return dict(step_size=_check_int(arguments["step_size"], "step_size", owner, minimum=1),
                    gamma=_check_float(arguments["gamma"], "gamma", owner, low_open=True))

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lrs
        return [lr * self.gamma for lr in lrs]


class ExponentialLR(LRScheduler):
    r"""Multiplies each group's lr by `gamma` every epoch: :math:`\text{base\_lr} \cdot \gamma^{e}` at epoch e
    when nothing else changes it.

    Args:
        optimizer: the wrapped `Optimizer`.
        gamma: the multiplicative factor per epoch, a finite float > 0.

    Example:
        >>> scheduler = ExponentialLR(optimizer, gamma=0.95)
        >>> for epoch in range(100):
        ...     train(...)
        ...     scheduler.step()
    """

    _ARGUMENTS = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.__dict__.update(self._check_arguments(dict(gamma=gamma), "ExponentialLR"))
        super().__init__(optimizer)

    @classmethod
    def _check_arguments(cls, arguments: dict, owner: str) -> dict:
        return dict(gamma=_check_float(arguments["gamma"], "gamma", owner, low_open=True))

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        return lrs if self.last_epoch == 0 else [lr * self.gamma for lr in lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Anneals each group's lr from its base value to `eta_min` along a half cosine over `T_max` epochs:

    .. math::
        \eta_e = \eta_{min} + \frac{1}{2}(\text{base\_lr} - \eta_{min})\left(1 + \cos\frac{\pi e}{T_{max}}\right)

    This closed form equals PyTorch's recursive form (which scales the current lr) whenever only the scheduler
    changes the lr; unlike it, it ignores changes made to `group["lr"]` by others. Past `T_max` the lr rises
    again along the cosine, as in PyTorch (SGDR's restarts are not implemented).

    Args:
        optimizer: the wrapped `Optimizer`.
        T_max: the number of epochs of the half period, an int >= 1.
        eta_min: the minimum learning rate, a finite float >= 0. Default: 0.

    Example:
        >>> scheduler = CosineAnnealingLR(optimizer, T_max=50)
        >>> for epoch in range(50):
        ...     train(...)
        ...     scheduler.step()
    """

    _ARGUMENTS = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        self.__dict__.update(self._check_arguments(dict(T_max=T_max, eta_min=eta_min), "CosineAnnealingLR"))
        super().__init__(optimizer)

    @classmethod
    def _check_arguments(cls, arguments: dict, owner: str) -> dict:
        return dict(T_max=_check_int(arguments["T_max"], "T_max", owner, minimum=1),
                    eta_min=_check_float(arguments["eta_min"], "eta_min", owner))

    def get_lr(self) -> list[float]:
        cosine = (1.0 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2.0
        return [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]


class ReduceLROnPlateau(LRScheduler):
    """Multiplies each group's lr by `factor` when a monitored metric stopped improving for `patience` epochs.

    `step(metrics)` counts an epoch as bad unless the metric beats the best so far by the threshold
    (mode "min", threshold_mode "rel": metric < best * (1 - threshold); "abs": metric < best - threshold; mode "max"
    mirrors these). After more than `patience` bad epochs in a row, each lr becomes max(lr * factor, min_lr) (unless
    that changes it by eps or less), and the next `cooldown` epochs are not counted. Unlike the other schedulers it
    does not set `initial_lr`, as in PyTorch.

    Args:
        optimizer: the wrapped `Optimizer`.
        mode: "min" (the metric should fall, e.g. a loss) or "max" (e.g. an accuracy). Default: "min".
        factor: the lr multiplier, a float in (0, 1). Default: 0.1.
        patience: the number of bad epochs tolerated before reducing, an int >= 0. Default: 10.
        threshold: the minimum improvement that counts, a finite float >= 0. Default: 1e-4.
        threshold_mode: "rel" (relative to the best) or "abs". Default: "rel".
        cooldown: epochs after a reduction during which bad epochs are not counted, an int >= 0. Default: 0.
        min_lr: the lower bound of the lr, a float >= 0 or a list of one per group. Default: 0.
        eps: the smallest change of lr worth making, a finite float >= 0. Default: 1e-8.

    Example:
        >>> scheduler = ReduceLROnPlateau(optimizer, mode="min", patience=5)
        >>> for epoch in range(100):
        ...     train(...)
        ...     scheduler.step(validation_loss)
    """

    _ARGUMENTS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps")
    _COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "last_lr")

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr=0.0,
                 eps: float = 1e-8):
        owner = "ReduceLROnPlateau"
        self.optimizer = _check_optimizer(optimizer, owner)
        count = len(optimizer.param_groups)
        min_lrs = min_lr if isinstance(min_lr, (list, tuple)) else [min_lr] * count
        arguments = dict(mode=mode, factor=factor, patience=patience, threshold=threshold,
                         threshold_mode=threshold_mode, cooldown=cooldown, eps=eps)
        self.__dict__.update(self._check_arguments(dict(arguments, min_lrs=min_lrs), owner, count))
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [float(group["lr"]) for group in optimizer.param_groups]

    @classmethod
    def _check_arguments(cls, arguments: dict, owner: str, group_count: int) -> dict:  # type: ignore[override]
        return dict(
            mode=_check_choice(arguments["mode"], "mode", owner, ("min", "max")),
            factor=_check_float(arguments["factor"], "factor", owner, low_open=True, high=1.0),
            patience=_check_int(arguments["patience"], "patience", owner, minimum=0),
            threshold=_check_float(arguments["threshold"], "threshold", owner),
            threshold_mode=_check_choice(arguments["threshold_mode"], "threshold_mode", owner, ("rel", "abs")),
            cooldown=_check_int(arguments["cooldown"], "cooldown", owner, minimum=0),
            min_lrs=_check_lr_list(arguments["min_lrs"], "min_lr", group_count, owner),
            eps=_check_float(arguments["eps"], "eps", owner),
        )

    def get_lr(self) -> list[float]:
        raise NotImplementedError("ReduceLROnPlateau sets the lr from a metric: call step(metrics)")

    def _is_better(self, metric: float) -> bool:
        if self.mode == "min":
            return metric < (self.best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                             else self.best - self.threshold)
        return metric > (self.best * (1.0 + self.threshold) if self.threshold_mode == "rel"
                         else self.best + self.threshold)

    def step(self, metrics) -> None:  # type: ignore[override]
        """Record one epoch's metric and reduce the lrs if it has not improved for more than `patience` epochs.

        Args:
            metrics: the monitored value, a finite number such as the validation loss (PyTorch's name).
        """
        rule = "ReduceLROnPlateau.step: metrics must be a finite number; got"
        if isinstance(metrics, (bool, str, bytes)):
            raise TypeError(f"{rule} {metrics!r}")
        try:
            current = float(metrics)  # a Python or NumPy number, or a 0-d array
        except (TypeError, ValueError):
            raise TypeError(f"{rule} {_describe(metrics)}") from None
        if not math.isfinite(current):
            raise ValueError(f"{rule} {current!r}")
        if len(self.min_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"ReduceLROnPlateau.step: min_lr has {len(self.min_lrs)} values but the optimizer now "
                             f"has {len(self.optimizer.param_groups)} parameter groups")
        self.last_epoch += 1
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def _reduce_lr(self) -> None:
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def state_dict(self) -> dict:
        """Arguments and counters, JSON-able: the best metric is None until a first step (JSON has no infinity)."""
        state = {name: getattr(self, name) for name in self._ARGUMENTS}
        state["min_lrs"] = list(self.min_lrs)
        state.update(best=self.best if math.isfinite(self.best) else None, num_bad_epochs=self.num_bad_epochs,
                     cooldown_counter=self.cooldown_counter, last_epoch=self.last_epoch, last_lr=list(self._last_lr))
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        owner = "ReduceLROnPlateau.load_state_dict"
        state = _check_state_keys(state_dict, set(self._ARGUMENTS) | set(self._COUNTERS), owner)
        count = len(self.optimizer.param_groups)
        arguments = self._check_arguments({name: state[name] for name in self._ARGUMENTS}, owner, count)
        worst = math.inf if arguments["mode"] == "min" else -math.inf
        best = worst if state["best"] is None else _check_float(state["best"], "best", owner, low=-math.inf)
        counters = dict(
            best=best,
            num_bad_epochs=_check_int(state["num_bad_epochs"], "num_bad_epochs", owner, minimum=0),
            cooldown_counter=_check_int(state["cooldown_counter"], "cooldown_counter", owner, minimum=0),
            last_epoch=_check_int(state["last_epoch"], "last_epoch", owner, minimum=0),
            _last_lr=_check_lr_list(state["last_lr"], "last_lr", count, owner),
        )
        self.__dict__.update(arguments, **counters)
