"""The Module base class: parameters, buffers, children, modes, state dicts and a config for rebuilding.

A module computes `forward(x)` and, after a recorded forward pass, `backward(grad_output)`: it returns the
gradient with respect to its input and adds parameter gradients into `param.grad`. Forward passes record what
backward needs only in training mode with gradients enabled (see `fastcnn.no_grad`), so evaluation and
inspection change nothing.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from .. import _grad_mode
from .parameter import Parameter

__all__ = ["Module", "register_module", "module_from_config", "module_config", "registered_modules"]

_REGISTRY: dict[str, type] = {}


def register_module(cls: type) -> type:
    """Make a Module subclass rebuildable by `fastcnn.load` from its class name and `get_config()`.

    Use it as a decorator on your own layers:
        >>> @fastcnn.nn.register_module
        ... class Scale(fastcnn.nn.Module): ...
    """
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_module: expected a Module subclass; got {cls!r}")
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_modules() -> dict[str, type]:
    return dict(_REGISTRY)


def module_config(module: "Module") -> dict:
    """The JSON-able description `module_from_config` rebuilds the module from (weights not included)."""
    name = type(module).__name__
    if _REGISTRY.get(name) is not type(module):
        raise TypeError(
            f"module_config: {name} is not registered; decorate it with fastcnn.nn.register_module so that "
            f"saved models can rebuild it"
        )
    return {"class": name, "config": module.get_config()}


def module_from_config(spec) -> "Module":
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(f"module_from_config: expected a dict with 'class' and 'config'; got {spec!r}")
    cls = _REGISTRY.get(spec["class"])
    if cls is None:
        raise ValueError(
            f"module_from_config: unknown module class {spec['class']!r}; register it with "
            f"fastcnn.nn.register_module before loading (known: {', '.join(sorted(_REGISTRY))})"
        )
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"module_from_config: config of {spec['class']} must be a dict; got {config!r}")
    return cls.from_config(config)


class Module:
    """Base class of every layer and model.

    Subclasses set parameters (`Parameter`), buffers (`register_buffer`) and child modules as attributes in
    `__init__`, and implement `forward` and `backward`. To be saved and loaded by class name they also implement
    `get_config()` (constructor arguments) and are decorated with `register_module`.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- attributes -------------------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value) -> None:
        """A state array that is saved and loaded but not trained (BatchNorm's running statistics)."""
        array = np.array(value, copy=True)
        self.__setattr__(name, array)
        self._buffers[name] = array

    def _set_buffer(self, name: str, value) -> None:
        """Overwrite a buffer in place, so references to it (views, the demo's snapshot) stay valid."""
        self._buffers[name][...] = value

    # --- traversal --------------------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        # named_modules' order without building the names: predict and evaluate walk the model twice per call (to
        # eval mode and back), and the names were most of predict's overhead on a single image.
        yield self
        for child in self._modules.values():
            yield from child.modules()

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name, buffer in module._buffers.items():
                yield (f"{module_name}.{name}" if module_name else name), buffer

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- modes and gradients ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    def freeze(self) -> "Module":
        """Stop training every parameter of this module (transfer learning keeps learned features this way)."""
        for param in self.parameters():
            param.requires_grad = False
        return self

    def unfreeze(self) -> "Module":
        for param in self.parameters():
            param.requires_grad = True
        return self

    def _recording(self) -> bool:
        """Whether this forward pass must keep what backward needs.

        A forward pass that does not record leaves the last recorded one in place, so looking at a model (feature
        maps, a validation pass) between a training forward and its backward does not break the step.
        """
        return _grad_mode.is_grad_enabled() and (self.training or _grad_mode.forced_recording())

    @staticmethod
    def _accumulate(param: Parameter, gradient: np.ndarray) -> None:
        if _grad_mode.param_grads_enabled():
            param.accumulate(gradient)

    # --- computation ------------------------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output, input_grad: bool = True):
        """Gradient with respect to the input of the last recorded forward pass; adds into param.grad.

        `input_grad=False` lets a first layer skip computing a gradient nobody needs (it then returns None).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, x):
        return self.forward(x)

    def _require_cache(self, cache):
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: no recorded forward pass; call forward in training mode, "
                f"outside fastcnn.no_grad(), before backward"
            )
        return cache

    # --- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and buffer, keyed like PyTorch ('features.0.weight', 'bn.running_mean')."""
        state = OrderedDict()
        for name, param in self.named_parameters():
            state[name] = param.data.copy()
        for name, buffer in self.named_buffers():
            state[name] = np.array(buffer, copy=True)
        return state

    def load_state_dict(self, state, strict: bool = True) -> dict:
        """Copy values into this module's parameters and buffers (in place).

        Args:
            state: mapping of dotted names to arrays (a `state_dict()`, or a PyTorch state_dict converted to NumPy).
            strict: require exactly the same keys. Shapes must always match.

        Returns:
            {"missing_keys": [...], "unexpected_keys": [...]} (both empty when strict).
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"load_state_dict: expected a mapping of names to arrays; got {type(state).__name__}")
        targets = {name: ("param", p) for name, p in self.named_parameters()}
        targets.update({name: ("buffer", b) for name, b in self.named_buffers()})
        missing = [name for name in targets if name not in state]
        unexpected = [name for name in state if name not in targets]
        if strict and (missing or unexpected):
            raise ValueError(
                "load_state_dict: keys do not match the model"
                + (f"; missing from the checkpoint: {', '.join(missing)}" if missing else "")
                + (f"; unexpected in the checkpoint: {', '.join(unexpected)}" if unexpected else "")
            )
        checked = []
        for name, (kind, target) in targets.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            have = target.data.shape if kind == "param" else target.shape
            if value.shape != have:
                raise ValueError(
                    f"load_state_dict: size mismatch for {name}: checkpoint has {tuple(value.shape)}, model has {tuple(have)}"
                )
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {name} must hold numbers; got dtype {value.dtype}")
            if kind == "param" and not np.all(np.isfinite(value)):
                raise ValueError(f"load_state_dict: {name} holds NaN or infinite values")
            checked.append((kind, target, value))
        for kind, target, value in checked:  # nothing is written unless everything was valid
            if kind == "param":
                target.data[...] = value
            else:
                target[...] = value
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    # --- pickling ---------------------------------------------------------------------------------------------
    # What a forward pass keeps for backward (inputs, masks, pooling indices) is no part of the model: dropping it
    # makes a pickled model (shipped to Dask workers, deep-copied) its architecture and weights only.
    _TRANSIENT_ATTRIBUTES = ("_cache",)

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in self._TRANSIENT_ATTRIBUTES:
            if name in state:
                state[name] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)  # not through __setattr__: the tables arrive filled, with the same objects

    # --- config for save/load ---------------------------------------------------------------------------------
    def get_config(self) -> dict:
        """Constructor arguments as JSON-able values; override in layers that take arguments."""
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Module":
        return cls(**config)

    # --- display ----------------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)
