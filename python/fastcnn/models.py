"""Ready-made models: the tutorial CNN that the CLI and the browser demo train, and LeNet-5.

`HYPERPARAMETERS` is the one table of valid values for the tutorial CNN and its training run; the CLI and the
browser demo both check user input with `validate_hyperparameters`, so both reject a bad value with the same words:

    >>> validate_hyperparameters(filter_size=4)
    Traceback (most recent call last):
    ValueError: filter_size must be an odd int between 3 and 7; got 4
"""
from __future__ import annotations

import dataclasses
import math
import numbers

from . import _random, nn

__all__ = [
    "Hyperparameter",
    "HYPERPARAMETERS",
    "validate_hyperparameters",
    "feature_size",
    "tutorial_cnn",
    "lenet5",
]


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One user-settable value: its type, its bounds (inclusive), the values allowed and its default.

    Attributes:
        name: the keyword used everywhere (CLI flag `--filter-size` is `filter_size` here).
        type: int or float.
        minimum, maximum: inclusive bounds.
        default: the value used when none is given.
        choices: the allowed values when they are a short list (for a drop-down), else None (every value of
            `type` between the bounds).
        odd: only odd ints are allowed.
        help: one line for a CLI's --help and the demo's tooltip.
    """

    name: str
    type: type
    minimum: float
    maximum: float
    default: float
    help: str
    choices: tuple | None = None
    odd: bool = False

    @property
    def rule(self) -> str:
        """The rule in words, as every error message states it: 'an odd int between 3 and 7'."""
        if self.choices is not None and len(self.choices) == 2:
            return f"{self.choices[0]} or {self.choices[1]}"
        kind = "an odd int" if self.odd else ("an int" if self.type is int else "a number")
        return f"{kind} between {self.minimum:g} and {self.maximum:g}"

    def validate(self, value):
        """`value` converted to `type`, or ValueError "<name> must be <rule>; got <value>".

        Accepts ints, floats with an integral value for ints (3.0), and numeric strings ("3", "1e-3": a form
        field or a query string); rejects bools, NaN and infinities.
        """
        number = _parse_number(value)
        if number is not None and self.type is int:
            number = int(number) if float(number).is_integer() else None
        if (number is None or not self.minimum <= number <= self.maximum
                or (self.odd and number % 2 == 0)
                or (self.choices is not None and number not in self.choices)):
            raise ValueError(f"{self.name} must be {self.rule}; got {value!r}")
        return self.type(number)

    def as_dict(self) -> dict:
        """JSON-able description for a front end: name, type ('int' or 'float'), min, max, choices, default, rule,
        help."""
        return {"name": self.name, "type": self.type.__name__, "min": self.minimum, "max": self.maximum,
                "choices": None if self.choices is None else list(self.choices), "default": self.default,
                "odd": self.odd, "rule": self.rule, "help": self.help}


def _parse_number(value):
    """A finite int or float from an int, float or numeric string; None for anything else (bools included)."""
    if isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b"):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return float(value)
    return None


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    spec.name: spec
    for spec in (
        Hyperparameter("filters", int, 1, 64, 32, "filters in the first convolution (the second has twice as many)"),
        Hyperparameter("filter_size", int, 3, 7, 3, "height and width of each convolution filter",
                       choices=(3, 5, 7), odd=True),
        Hyperparameter("pool_size", int, 1, 4, 2, "max-pooling window and stride after each convolution (1: none)",
                       choices=(1, 2, 3, 4)),
        Hyperparameter("conv_layers", int, 1, 2, 1, "convolution + ReLU + pooling stages", choices=(1, 2)),
        Hyperparameter("learning_rate", float, 1e-4, 1.0, 1e-3, "the optimizer's step size"),
        Hyperparameter("epochs", int, 1, 20, 5, "passes over the training images"),
        Hyperparameter("batch_size", int, 1, 4096, 64, "images per training step"),
    )
}


def feature_size(input_size: int, pool_size: int, conv_layers: int) -> int:
    """Height (= width) of the last pooled feature maps: input_size floor-divided by pool_size once per stage.

    The convolutions use 'same' padding and keep the size; each MaxPool2d(pool_size) floors size / pool_size.
    """
    size = int(input_size)
    for _ in range(int(conv_layers)):
        size //= int(pool_size)
    return size


def _check_positive_int(value, name: str, fn: str | None) -> int:
    number = _parse_number(value) if not isinstance(value, str) else None
    if number is None or not float(number).is_integer() or number < 1:
        raise ValueError((f"{fn}: " if fn else "") + f"{name} must be a positive int; got {value!r}")
    return int(number)


def validate_hyperparameters(input_size: int = 28, **values) -> dict:
    """Check user-given hyperparameters against `HYPERPARAMETERS` and return all of them, normalised.

    Missing names (and None values) take their defaults; numeric strings are converted ("5", "0.01"). The CLI and
    the browser demo both call this, so their messages are the same.

    Args:
        input_size: height (= width) of the input images, to check that the pooled maps keep at least 1x1.
            Default: 28.
        **values: any of filters, filter_size, pool_size, conv_layers, learning_rate, epochs, batch_size.

    Returns:
        dict with every name in `HYPERPARAMETERS`, values of the declared type.

    Raises:
        ValueError: "<name> must be <rule>; got <value>" for a value out of its range or of the wrong kind;
            "unknown hyperparameter ..." for a name not in the table; and, when the pooling stages leave nothing,
            "pool_size 4 with 2 conv layers shrinks the 8x8 input to 0x0; use a smaller pool_size or fewer layers".

    Example:
        >>> validate_hyperparameters(filters="16", pool_size=2)["filters"]
        16
    """
    unknown = sorted(set(values) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameter {unknown[0]!r}; expected one of {', '.join(HYPERPARAMETERS)}")
    input_size = _check_positive_int(input_size, "input_size", None)
    result = {}
    for name, spec in HYPERPARAMETERS.items():
        value = values.get(name)
        result[name] = spec.default if value is None else spec.validate(value)
    pool, layers = result["pool_size"], result["conv_layers"]
    size = feature_size(input_size, pool, layers)
    if size < 1:
        stages = f"{layers} conv layer" + ("s" if layers != 1 else "")
        raise ValueError(f"pool_size {pool} with {stages} shrinks the {input_size}x{input_size} input to "
                         f"{size}x{size}; use a smaller pool_size or fewer layers")
    return result


def tutorial_cnn(filters=32, filter_size=3, pool_size=2, conv_layers=1, in_channels=1, num_classes=10,
                 input_size=28, seed=None) -> nn.Sequential:
    """The small CNN of the classic Keras MNIST tutorial, as the CLI and the browser demo build it.

    Architecture (layer indices in brackets; `F = filters`, `k = filter_size`, `p = pool_size`):

        [0] Conv2d(in_channels, F, k, padding='same')  [1] ReLU  [2] MaxPool2d(p)
        with conv_layers=2 also:
        [3] Conv2d(F, 2F, k, padding='same')           [4] ReLU  [5] MaxPool2d(p)
        then Flatten, Linear(C_last * s * s, 128), ReLU, Linear(128, num_classes) -> logits,

    where C_last is F or 2F and s = `feature_size(input_size, p, conv_layers)` (input_size floor-divided by p once
    per stage). pool_size=1 keeps a MaxPool2d(1), an identity, so layer indices and state-dict keys are the same
    for every pool_size (the demo addresses layers by index).

    Args:
        filters, filter_size, pool_size, conv_layers: within `HYPERPARAMETERS`' ranges. Defaults: 32, 3, 2, 1.
        in_channels: channels of the input images. Default: 1.
        num_classes: outputs (logits). Default: 10.
        input_size: height (= width) of the input images. Default: 28.
        seed: int or numpy Generator for the initial weights; None draws from `fastcnn.manual_seed`'s generator.

    Shape:
        (N, in_channels, input_size, input_size) -> (N, num_classes).

    Example:
        >>> model = tutorial_cnn(filters=8, conv_layers=2, input_size=28, seed=0)
        >>> model(np.zeros((4, 1, 28, 28), np.float32)).shape
        (4, 10)
    """
    fn = "tutorial_cnn"
    try:
        checked = validate_hyperparameters(input_size=input_size, filters=filters, filter_size=filter_size,
                                           pool_size=pool_size, conv_layers=conv_layers)
    except ValueError as error:
        raise ValueError(f"{fn}: {error}") from None
    in_channels = _check_positive_int(in_channels, "in_channels", fn)
    num_classes = _check_positive_int(num_classes, "num_classes", fn)
    rng = _random.generator_from(seed)
    layers, channels, width = [], in_channels, checked["filters"]
    for _ in range(checked["conv_layers"]):
        layers += [nn.Conv2d(channels, width, checked["filter_size"], padding="same", seed=rng), nn.ReLU(),
                   nn.MaxPool2d(checked["pool_size"])]
        channels, width = width, width * 2
    size = feature_size(input_size, checked["pool_size"], checked["conv_layers"])
    layers += [nn.Flatten(), nn.Linear(channels * size * size, 128, seed=rng), nn.ReLU(),
               nn.Linear(128, num_classes, seed=rng)]
    return nn.Sequential(*layers)


def lenet5(num_classes=10, in_channels=1, seed=None) -> nn.Sequential:
    """LeNet-5 for 28x28 images (the first convolution pads by 2, as the 32x32 original saw them): 61,706
    parameters for 10 classes.

        Conv2d(in_channels, 6, 5, padding=2) ReLU MaxPool2d(2)   28x28 -> 14x14
        Conv2d(6, 16, 5)                     ReLU MaxPool2d(2)   14x14 -> 10x10 -> 5x5
        Flatten Linear(400, 120) ReLU Linear(120, 84) ReLU Linear(84, num_classes)

    Args:
        num_classes: outputs (logits). Default: 10.
        in_channels: channels of the input images. Default: 1.
        seed: int or numpy Generator for the initial weights.

    Shape:
        (N, in_channels, 28, 28) -> (N, num_classes).
    """
    fn = "lenet5"
    num_classes = _check_positive_int(num_classes, "num_classes", fn)
    in_channels = _check_positive_int(in_channels, "in_channels", fn)
    rng = _random.generator_from(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, seed=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, seed=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120, seed=rng), nn.ReLU(),
        nn.Linear(120, 84, seed=rng), nn.ReLU(),
        nn.Linear(84, num_classes, seed=rng),
    )
