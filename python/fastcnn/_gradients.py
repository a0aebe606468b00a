"""Gradient tools over `Module.backward`: `gradcheck` (analytic gradients against finite differences) and
`input_gradient` (saliency maps). Import them from `fastcnn.training`, which re-exports them.
"""
from __future__ import annotations

import math

import numpy as np

from . import _grad_mode, nn
from ._batches import _as_inputs, _as_labels, _check_int, _check_label_range, _check_model, _check_seed, _modes


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
