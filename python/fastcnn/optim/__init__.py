"""Optimizers that update `Parameter.data` in place from `Parameter.grad`, with PyTorch's update rules.

Every optimizer keeps its hyper-parameters in `param_groups` (a list of dicts, one per group, that schedulers and
users may change between steps) and its per-parameter buffers in `state` (float32 arrays, created at the first
step). `state_dict()` holds only NumPy arrays and JSON-able values, so a checkpoint is an .npz plus a JSON file.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping

import numpy as np

from .._args import check_bool
from ..nn.parameter import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]


# ---------------------------------------------------------------------------------------------------------------
# Argument checks shared with lr_scheduler: each names the owner, the argument, the rule and the value received.

def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def _real(value, name: str, owner: str, rule: str) -> float:
    """A real number as a Python float (so it is JSON-able and keeps NumPy arithmetic in float32)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {name} must be {rule}; got {_describe(value)}")
    return float(value)


def _check_float(value, name: str, owner: str, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> float:
    """A finite float in the interval [low, high) (by default [0, inf)); the rule is spelled out in the error."""
    if low == -math.inf:
        rule = "a finite float"
    elif high == math.inf:
        rule = f"a finite float {'>' if low_open else '>='} {low:g}"
    else:
        rule = f"a float in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    number = _real(value, name, owner, rule)
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if not math.isfinite(number) or below or above:
        raise ValueError(f"{owner}: {name} must be {rule}; got {value!r}")
    return number


def _check_int(value, name: str, owner: str, *, minimum: int) -> int:
    """An integer (Python or NumPy, never a bool or a float) >= minimum."""
    rule = f"an int >= {minimum}"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be {rule}; got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be {rule}; got {_describe(value)}") from None
    if number < minimum:
        raise ValueError(f"{owner}: {name} must be {rule}; got {value!r}")
    return number


def _check_choice(value, name: str, owner: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------------

def _as_group_list(params, owner: str) -> list[dict]:
    """`params` as a list of group dicts: an iterable of Parameters is one group, an iterable of dicts is many."""
    if isinstance(params, (Parameter, np.ndarray, Mapping, str)):
        raise TypeError(
            f"{owner}: params must be an iterable of Parameters or of dicts (parameter groups); got "
            f"{type(params).__name__} (wrap a single one in a list)"
        )
    if isinstance(params, (set, frozenset)):
        # state_dict() numbers parameters by position; a set's order changes between runs.
        raise TypeError(
            f"{owner}: params must be an ordered iterable (a list, a generator); got a {type(params).__name__}"
        )
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            f"{owner}: params must be an iterable of Parameters or of dicts (parameter groups); got {_describe(params)}"
        ) from None
    if not items:
        raise ValueError(
            f"{owner}: params must not be empty; got an empty parameter list "
            "(a generator such as model.parameters() can be consumed only once)"
        )
    dicts = [isinstance(item, Mapping) for item in items]
    if all(dicts):
        return [dict(item) for item in items]
    if any(dicts):
        raise TypeError(f"{owner}: params must hold only Parameters or only dicts (parameter groups); got a mix")
    return [{"params": items}]


def _group_params(group: dict, where: str, owner: str) -> list[Parameter]:
    if "params" not in group:
        raise ValueError(f"{owner}: a parameter group must have a 'params' key; got keys {sorted(map(str, group))}{where}")
    params = group["params"]
    if isinstance(params, Parameter):
        return [params]
    if isinstance(params, (set, frozenset, Mapping, str, np.ndarray)):
        raise TypeError(f"{owner}: 'params' must be a Parameter or an ordered iterable of Parameters; got "
                        f"{type(params).__name__}{where}")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{owner}: 'params' must be a Parameter or an iterable of Parameters; got "
                        f"{_describe(params)}{where}") from None
    if not params:
        raise ValueError(f"{owner}: params must not be empty; got a parameter group with no parameters{where}")
    for position, param in enumerate(params):
        if not isinstance(param, Parameter):
            raise TypeError(f"{owner}: params must contain only fastcnn Parameters; got {type(param).__name__} at "
                            f"position {position}{where}")
    return params


class Optimizer:
    """Base class of the optimizers: parameter groups, state, `zero_grad`, `state_dict` and `load_state_dict`.

    A subclass passes its validated `defaults` (hyper-parameter name -> value), implements `_check_group` (which
    validates and normalises one group's hyper-parameters), `_state_names` (the buffers a parameter's state holds
    once it has stepped) and `_update` (one parameter's in-place update).

    Args:
        params: an iterable of Parameters, or of dicts (parameter groups) such as
            `{"params": [...], "lr": 0.01}` whose other keys override `defaults` for that group.
        defaults: the hyper-parameters of every group that does not override them.
    """

    # Keys a group may hold besides its hyper-parameters: schedulers record the learning rate they started from.
    _EXTRA_GROUP_KEYS = ("initial_lr",)

    def __init__(self, params, defaults: dict):
        owner = type(self).__name__
        self.defaults = self._check_group(dict(defaults), owner, "")
        self.param_groups: list[dict] = []
        self.state: dict[Parameter, dict] = {}
        # Two rows of float32 scratch, as long as the largest parameter: the update's temporaries are views into it,
        # so a step allocates nothing.
        self._scratch = np.empty((2, 0), dtype=np.float32)
        for group in _as_group_list(params, owner):
            self.add_param_group(group)

    # -- subclass interface ------------------------------------------------------------------------------------

    # Every buffer a parameter's state may hold, in the order the optimizer creates them.
    _STATE_NAMES: tuple[str, ...] = ()

    def _check_group(self, group: dict, owner: str, where: str) -> dict:
        """The group's hyper-parameters, validated and normalised (Python floats, tuples)."""
        raise NotImplementedError

    def _state_names(self, group: dict) -> tuple[str, ...]:
        """The buffers a parameter's state must hold, once it has any, under the group's hyper-parameters."""
        raise NotImplementedError

    def _checked_group(self, group: dict, owner: str, where: str) -> dict:
        checked = self._check_group(group, owner, where)
        if "initial_lr" in group:
            try:
                checked["initial_lr"] = _check_float(group["initial_lr"], "initial_lr", owner)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{error}{where}") from None
        return checked

    def _update(self, param: Parameter, group: dict, state: dict, scratch_a: np.ndarray, scratch_b: np.ndarray):
        raise NotImplementedError

    # -- groups ------------------------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters, e.g. layers unfrozen while fine-tuning; missing hyper-parameters take the
        optimizer's defaults.

        Args:
            param_group: a dict with a "params" key (a Parameter or an iterable of them) and optional
                hyper-parameter overrides.
        """
        owner = f"{type(self).__name__}"
        where = f" (in param_groups[{len(self.param_groups)}])"
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{owner}: a parameter group must be a dict; got {_describe(param_group)}")
        params = _group_params(dict(param_group), where, owner)
        self._check_no_duplicates(params, owner, where)
        unknown = set(param_group) - {"params"} - set(self.defaults) - set(self._EXTRA_GROUP_KEYS)
        if unknown:
            raise ValueError(f"{owner}: unknown hyper-parameter(s) {sorted(unknown)}{where}; expected some of "
                             f"{sorted(self.defaults)}")
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self.param_groups.append({"params": params, **self._checked_group(merged, owner, where)})
        largest = max(param.data.size for param in params)
        if largest > self._scratch.shape[1]:
            self._scratch = np.empty((2, largest), dtype=np.float32)

    def _check_no_duplicates(self, params: list[Parameter], owner: str, where: str) -> None:
        # A parameter listed twice would be updated twice per step, and its state would be ambiguous.
        earlier = {param: (g, i) for g, group in enumerate(self.param_groups)
                   for i, param in enumerate(group["params"])}
        here: dict[Parameter, int] = {}
        for position, param in enumerate(params):
            if param in earlier:
                g, i = earlier[param]
                raise ValueError(f"{owner}: a parameter must appear only once; got {param!r} at position {position}"
                                 f"{where}, already at position {i} of param_groups[{g}]")
            if param in here:
                raise ValueError(f"{owner}: a parameter must appear only once; got {param!r} at positions "
                                 f"{here[param]} and {position}{where}")
            here[param] = position

    # -- training ----------------------------------------------------------------------------------------------

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero, in place (frozen ones included: it costs nothing to them)."""
        for group in self.param_groups:
            for param in group["params"]:
                param.zero_grad()

    def step(self, closure=None):
        """Update every trainable parameter's `data` in place from its `grad`.

        Args:
            closure: an optional callable that recomputes the loss (and the gradients) and returns the loss, as
                in PyTorch. Default: None.

        Returns:
            the closure's loss, or None.
        """
        loss = None if closure is None else closure()
        owner = f"{type(self).__name__}.step"
        for group in self.param_groups:
            # Schedulers and users set group["lr"] between steps: check it here, where a bad one would do harm.
            group["lr"] = _check_float(group["lr"], "lr", owner)
            for param in group["params"]:
                if not param.requires_grad:
                    continue
                size = param.data.size
                scratch_a = self._scratch[0, :size].reshape(param.data.shape)
                scratch_b = self._scratch[1, :size].reshape(param.data.shape)
                self._update(param, group, self.state.setdefault(param, {}), scratch_a, scratch_b)
        return loss

    # -- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The optimizer's state as NumPy arrays and JSON-able values, copied (later steps do not change it).

        Parameters are numbered by their position across `param_groups`. The keys are:

        - "param_groups": a list of dicts, one per group, with its hyper-parameters and "params", the numbers of
          its parameters (JSON-able);
        - "state.<number>.<name>": a parameter's buffer (a float32 array) or step count (an int).

        Example:
            >>> state = optimizer.state_dict()
            >>> arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
            >>> np.savez("optimizer.npz", **arrays)
            >>> json.dump({k: v for k, v in state.items() if k not in arrays}, open("optimizer.json", "w"))
        """
        result: dict = {"param_groups": []}
        number = 0
        for group in self.param_groups:
            saved = {key: list(value) if isinstance(value, tuple) else value
                     for key, value in group.items() if key != "params"}
            saved["params"] = list(range(number, number + len(group["params"])))
            result["param_groups"].append(saved)
            for param in group["params"]:
                for name, value in self.state.get(param, {}).items():
                    result[f"state.{number}.{name}"] = value.copy() if isinstance(value, np.ndarray) else value
                number += 1
        return result

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the hyper-parameters and buffers saved by `state_dict()`, so training continues exactly.

        The checkpoint must come from an optimizer of the same kind over parameters of the same shapes, in the same
        groups. Nothing changes unless the whole checkpoint is valid.

        Args:
            state_dict: a dict as `state_dict()` returns it (tuples may come back as lists from JSON).
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{owner}: state_dict must be a dict; got {_describe(state_dict)}")
        if "param_groups" not in state_dict:
            raise ValueError(f"{owner}: missing key 'param_groups'; got keys {sorted(map(str, state_dict))[:10]}")
        groups, number_to_param = self._load_groups(state_dict["param_groups"], owner)
        buffers: dict[int, dict] = {}
        for key, value in state_dict.items():
            if key == "param_groups":
                continue
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
                raise ValueError(f"{owner}: unexpected key {key!r}; expected 'param_groups' and "
                                 "'state.<parameter number>.<name>'")
            if int(parts[1]) not in number_to_param:
                raise ValueError(f"{owner}: unexpected key {key!r}: the optimizer has parameters 0 to "
                                 f"{len(number_to_param) - 1}")
            buffers.setdefault(int(parts[1]), {})[parts[2]] = value
        state = {}
        for number, entries in buffers.items():
            param, group = number_to_param[number]
            state[param] = self._load_param_state(entries, param, group, f"state.{number}", owner)
        for current, loaded in zip(self.param_groups, groups):
            params = current["params"]
            current.clear()
            current.update({"params": params, **loaded})
        self.state = state

    def _load_groups(self, saved_groups, owner: str):
        """Validated hyper-parameters per group, and parameter number -> (Parameter, group) from the checkpoint."""
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self.param_groups):
            count = len(saved_groups) if isinstance(saved_groups, (list, tuple)) else _describe(saved_groups)
            raise ValueError(f"{owner}: param_groups must be a list of {len(self.param_groups)} groups, one per "
                             f"group of the optimizer; got {count}")
        groups, number_to_param = [], {}
        for g, (saved, current) in enumerate(zip(saved_groups, self.param_groups)):
            where = f" (in the checkpoint's param_groups[{g}])"
            if not isinstance(saved, Mapping):
                raise TypeError(f"{owner}: a parameter group must be a dict; got {_describe(saved)}{where}")
            numbers = saved.get("params")
            if not isinstance(numbers, (list, tuple)) or len(numbers) != len(current["params"]):
                count = len(numbers) if isinstance(numbers, (list, tuple)) else repr(numbers)
                raise ValueError(f"{owner}: the optimizer's param_groups[{g}] has {len(current['params'])} "
                                 f"parameters; the checkpoint's has {count}")
            hyper = {key: value for key, value in saved.items() if key != "params"}
            missing = set(self.defaults) - set(hyper)
            unknown = set(hyper) - set(self.defaults) - set(self._EXTRA_GROUP_KEYS)
            if missing or unknown:
                raise ValueError(f"{owner}: hyper-parameters do not match{where}: missing {sorted(missing)}, "
                                 f"unexpected {sorted(unknown)}")
            checked = self._checked_group(hyper, owner, where)
            for number, param in zip(numbers, current["params"]):
                number = _check_int(number, "a parameter number", owner, minimum=0)
                if number in number_to_param:
                    raise ValueError(f"{owner}: parameter number {number} appears twice in param_groups")
                number_to_param[number] = (param, checked)
            groups.append(checked)
        return groups, number_to_param

    def _load_param_state(self, entries: dict, param: Parameter, group: dict, prefix: str, owner: str) -> dict:
        required = self._state_names(group)
        if not set(required) <= set(entries) <= set(self._STATE_NAMES):
            raise ValueError(f"{owner}: {prefix} must hold {list(required)} (for these hyper-parameters), and "
                             f"nothing but {list(self._STATE_NAMES)}; got {sorted(entries)}")
        state = {}
        for name in (name for name in self._STATE_NAMES if name in entries):  # the order state_dict() writes
            value = entries[name]
            if name == "step":
                state[name] = _check_int(value, f"{prefix}.step", owner, minimum=1)
                continue
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise TypeError(f"{owner}: {prefix}.{name} must be a floating NumPy array; got {_describe(value)}")
            if value.shape != param.data.shape:
                raise ValueError(f"{owner}: size mismatch for {prefix}.{name}: checkpoint has {value.shape}, "
                                 f"parameter has {param.data.shape}")
            state[name] = np.array(value, dtype=np.float32, order="C", copy=True)
        return state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines.extend(f"    {key}: {value}" for key, value in group.items() if key != "params")
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum (heavy-ball or Nesterov) and L2 weight decay.

    With gradient :math:`g_t` of parameters :math:`\theta`, as `torch.optim.SGD` computes it:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad \text{(weight\_decay } \lambda \ne 0) \\
        b_t &\leftarrow g_t \text{ at the first step, else } \mu b_{t-1} + (1 - \tau) g_t
            \quad \text{(momentum } \mu \ne 0) \\
        g_t &\leftarrow g_t + \mu b_t \text{ (nesterov), else } b_t \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma g_t

    Args:
        params: an iterable of Parameters, or of dicts (parameter groups) whose keys override the defaults.
        lr: the learning rate :math:`\gamma`, a finite float >= 0 (required).
        momentum: the momentum factor :math:`\mu` >= 0. Default: 0.
        dampening: the dampening :math:`\tau` for momentum, in [0, 1]. Default: 0.
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening = 0). Default: False.
        weight_decay: the L2 penalty :math:`\lambda` >= 0, added to the gradient. Default: 0.

    Example:
        >>> optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> optimizer.zero_grad()
        >>> model.backward(loss_grad)   # accumulates into each Parameter.grad
        >>> optimizer.step()
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group: dict, owner: str, where: str) -> dict:
        checked = dict(group)
        try:
            checked["lr"] = _check_float(group["lr"], "lr", owner)
            checked["momentum"] = _check_float(group["momentum"], "momentum", owner)
            checked["dampening"] = _check_float(group["dampening"], "dampening", owner, high=1.0, high_open=False)
            checked["weight_decay"] = _check_float(group["weight_decay"], "weight_decay", owner)
            checked["nesterov"] = check_bool(group["nesterov"], "nesterov", owner)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{error}{where}") from None
        if checked["nesterov"] and (checked["momentum"] <= 0 or checked["dampening"] != 0):
            raise ValueError(f"{owner}: nesterov=True requires momentum > 0 and dampening == 0; got "
                             f"momentum={checked['momentum']!r} and dampening={checked['dampening']!r}{where}")
        return checked

    _STATE_NAMES = ("momentum_buffer",)

    def _state_names(self, group: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _update(self, param, group, state, scratch_a, scratch_b):
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        grad = param.grad
        if group["weight_decay"] != 0:
            np.multiply(param.data, group["weight_decay"], out=scratch_a)
            scratch_a += grad
            grad = scratch_a
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:  # PyTorch starts the buffer at the first gradient, not at zero
                buffer = state["momentum_buffer"] = np.array(grad, dtype=np.float32, order="C", copy=True)
            else:
                buffer *= momentum
                if dampening == 0:
                    buffer += grad
                else:
                    np.multiply(grad, 1.0 - dampening, out=scratch_b)
                    buffer += scratch_b
            if group["nesterov"]:
                np.multiply(buffer, momentum, out=scratch_b)
                scratch_b += grad
                grad = scratch_b
            else:
                grad = buffer
        np.multiply(grad, lr, out=scratch_a)
        np.subtract(param.data, scratch_a, out=param.data)  # out=, not -=, which would assign to param.data


def _check_adam_group(group: dict, owner: str, where: str) -> dict:
    checked = dict(group)
    try:
        checked["lr"] = _check_float(group["lr"], "lr", owner)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{owner}: betas must be a pair of floats, each in [0, 1); got {_describe(betas)}")
        checked["betas"] = (_check_float(betas[0], "betas[0]", owner, high=1.0),
                            _check_float(betas[1], "betas[1]", owner, high=1.0))
        checked["eps"] = _check_float(group["eps"], "eps", owner)
        checked["weight_decay"] = _check_float(group["weight_decay"], "weight_decay", owner)
        checked["amsgrad"] = check_bool(group["amsgrad"], "amsgrad", owner)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error}{where}") from None
    return checked


class Adam(Optimizer):
    r"""Adam: steps scaled by running averages of the gradient and of its square, with L2 weight decay.

    With gradient :math:`g_t`, as `torch.optim.Adam` computes it (:math:`t` counts this parameter's steps):

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad \text{(weight\_decay } \lambda \ne 0) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ (amsgrad), else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \cdot
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    Args:
        params: an iterable of Parameters, or of dicts (parameter groups) whose keys override the defaults.
        lr: the learning rate :math:`\gamma` >= 0. Default: 1e-3.
        betas: :math:`(\beta_1, \beta_2)`, the decay rates of the two averages, each in [0, 1).
            Default: (0.9, 0.999).
        eps: :math:`\epsilon` >= 0, added to the denominator for numerical stability. Default: 1e-8.
        weight_decay: the L2 penalty :math:`\lambda` >= 0, added to the gradient (use `AdamW` for decoupled
            decay). Default: 0.
        amsgrad: use the maximum of the second-moment averages so far (AMSGrad). Default: False.

    Example:
        >>> optimizer = Adam(model.parameters(), lr=1e-3)
        >>> optimizer.zero_grad(); model.backward(loss_grad); optimizer.step()
    """

    _decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def _check_group(self, group: dict, owner: str, where: str) -> dict:
        return _check_adam_group(group, owner, where)

    _STATE_NAMES = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _state_names(self, group: dict) -> tuple[str, ...]:
        names = ("step", "exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if group["amsgrad"] else names

    def _update(self, param, group, state, scratch_a, scratch_b):
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param.data)
            state["exp_avg_sq"] = np.zeros_like(param.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:  # also when amsgrad is switched on mid-training
            state["max_exp_avg_sq"] = np.zeros_like(param.data)
        state["step"] += 1
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]

        grad = param.grad
        if weight_decay != 0:
            if self._decoupled_weight_decay:
                np.multiply(param.data, 1.0 - lr * weight_decay, out=param.data)
            else:
                np.multiply(param.data, weight_decay, out=scratch_a)
                scratch_a += grad
                grad = scratch_a
        exp_avg *= beta1
        np.multiply(grad, 1.0 - beta1, out=scratch_b)
        exp_avg += scratch_b
        exp_avg_sq *= beta2
        np.multiply(grad, grad, out=scratch_b)
        scratch_b *= 1.0 - beta2
        exp_avg_sq += scratch_b  # grad (maybe scratch_a) is no longer needed below

        second_moment = exp_avg_sq
        if group["amsgrad"]:
            second_moment = np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        # Bias corrections in double precision, as PyTorch computes them from a Python float step.
        step_size = lr / (1.0 - beta1**step)
        denominator = np.sqrt(second_moment, out=scratch_b)
        denominator /= math.sqrt(1.0 - beta2**step)
        denominator += group["eps"]
        np.multiply(exp_avg, step_size, out=scratch_a)
        scratch_a /= denominator
        np.subtract(param.data, scratch_a, out=param.data)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter): the parameters shrink by :math:`1 - \gamma\lambda`
    before the Adam step, instead of :math:`\lambda\theta` being added to the gradient.

    .. math::
        \theta_{t-1} \leftarrow \theta_{t-1} (1 - \gamma \lambda), \text{ then the `Adam` step with no weight decay}

    Args:
        params: an iterable of Parameters, or of dicts (parameter groups) whose keys override the defaults.
        lr: the learning rate :math:`\gamma` >= 0. Default: 1e-3.
        betas: the decay rates of the two averages, each in [0, 1). Default: (0.9, 0.999).
        eps: added to the denominator for numerical stability, >= 0. Default: 1e-8.
        weight_decay: the decoupled decay :math:`\lambda` >= 0. Default: 1e-2.
        amsgrad: use the maximum of the second-moment averages so far (AMSGrad). Default: False.

    Example:
        >>> optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        >>> optimizer.zero_grad(); model.backward(loss_grad); optimizer.step()
    """

    _decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


# Imported last: lr_scheduler checks `isinstance(optimizer, Optimizer)` and uses the checks above.
from . import lr_scheduler  # noqa: E402
