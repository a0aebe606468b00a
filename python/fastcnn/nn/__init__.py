"""fastcnn.nn: layers, containers and losses with PyTorch's names, layouts and defaults."""
from .batchnorm import BatchNorm1d, BatchNorm2d
from .container import Sequential
from .layers import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Normalize,
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
)
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, module_config, module_from_config, register_module, registered_modules
from .parameter import Parameter

__all__ = [
    "Module", "Parameter", "Sequential", "register_module", "registered_modules", "module_config",
    "module_from_config", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten",
    "Linear", "BatchNorm1d", "BatchNorm2d", "Dropout", "GlobalAvgPool2d", "Residual", "Normalize", "Identity",
    "CrossEntropyLoss", "MSELoss",
]
