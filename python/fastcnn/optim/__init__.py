"""Optimizers that update `Parameter.data` in place from `Parameter.grad`, with PyTorch's update rules.

Every optimizer keeps its hyper-parameters in `param_groups` (a list of dicts, one per group, that schedulers and
users may change between steps) and its per-parameter buffers in `state` (float32 arrays, created at the first
step). `state_dict()` holds only NumPy arrays and JSON-able values, so a checkpoint is an .npz plus a JSON file.
"""
from __future__ import annotations

import math

import numpy as np

from .._args import check_bool
# lr_scheduler imports these checks and Optimizer from here (see the end of this file).
from ._checks import _check_choice, _check_float, _check_int, _describe  # noqa: F401
from ._optimizer import Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]


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
