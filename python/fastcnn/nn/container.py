"""Sequential: layers applied in order, with a Keras-like summary."""
from __future__ import annotations

import numpy as np

from .. import _grad_mode
from .module import Module, module_config, module_from_config, register_module

__all__ = ["Sequential"]


@register_module
class Sequential(Module):
    """Applies its layers in order; backward runs them in reverse. Indexable like a list (a slice is a Sequential).

    Example:
        >>> model = Sequential(Conv2d(1, 6, 5, padding=2), ReLU(), MaxPool2d(2), Flatten(), Linear(6 * 14 * 14, 10))
        >>> model(np.zeros((2, 1, 28, 28))).shape
        (2, 10)
    """

    def __init__(self, *layers: Module):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {index} must be a Module; got {type(layer).__name__}")
            setattr(self, str(index), layer)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        try:
            return layers[index]
        except (IndexError, TypeError):
            raise IndexError(f"Sequential: index {index!r} out of range for {len(layers)} layers") from None

    def __setitem__(self, index, layer: Module):
        """Replace a layer (e.g. a new classifier head for transfer learning)."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: a layer must be a Module; got {type(layer).__name__}")
        keys = list(self._modules)
        try:
            key = keys[index]
        except (IndexError, TypeError):
            raise IndexError(f"Sequential: index {index!r} out of range for {len(keys)} layers") from None
        self._modules[key] = layer
        object.__setattr__(self, key, layer)

    def append(self, layer: Module) -> "Sequential":
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: a layer must be a Module; got {type(layer).__name__}")
        setattr(self, str(len(self._modules)), layer)
        return self

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, grad_output, input_grad: bool = True):
        layers = list(self._modules.values())
        grad = grad_output
        for position in range(len(layers) - 1, -1, -1):
            grad = layers[position].backward(grad, input_grad=input_grad if position == 0 else True)
        return grad

    def get_config(self):
        return {"layers": [module_config(layer) for layer in self._modules.values()]}

    @classmethod
    def from_config(cls, config):
        return cls(*[module_from_config(spec) for spec in config.get("layers", [])])

    def summary(self, input_shape, *, print_fn=print) -> str:
        """A table of layers, output shapes and parameter counts for inputs of `input_shape` (without N).

        Runs one forward pass on zeros (nothing is recorded or changed) and returns the table; `print_fn=None`
        only returns it.
        """
        shape = tuple(int(s) for s in input_shape)
        x = np.zeros((1, *shape), dtype=np.float32)
        rows = [("Layer (type)", "Output shape", "Param #")]
        was_training = self.training
        self.eval()
        try:
            with _grad_mode.no_grad():
                for name, layer in self._modules.items():
                    x = layer(x)
                    params = sum(p.size for p in layer.parameters())
                    rows.append((f"{name} ({type(layer).__name__})", str((None, *x.shape[1:])), f"{params:,}"))
        finally:
            self.train(was_training)
        total = self.num_parameters()
        trainable = self.num_parameters(trainable_only=True)
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        rule = "-" * (sum(widths) + 6)
        lines = [rule, "  ".join(cell.ljust(w) for cell, w in zip(rows[0], widths)), rule.replace("-", "=")]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows[1:]]
        lines += [rule, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", rule]
        table = "\n".join(lines)
        if print_fn is not None:
            print_fn(table)
        return table
